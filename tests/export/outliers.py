"""A model where plain int8 loses accuracy, built honestly: one channel of a trained layer's output gets
a range ``factor`` times the others' and the next layer ignores that channel.

Why: int8 gives a whole activation tensor one scale, set by its widest channel, so the narrow channels
are rounded to a few levels (per-tensor activation ranges that differ by 100x between channels are
what Nagel et al. 2019 found in MobileNetV2). The float model stays a working model (it loses what the
ignored channel carried); its int8 file loses much more, and the culprit is known: ``layer``'s output.
"""

from __future__ import annotations


def with_outlier_channel(model, layer: str, reader: str, factor: float = 100.0, channel: int = 0):
    """``model`` (changed in place and returned): ``layer``'s output channel ``channel`` scaled by
    ``factor`` (kernel and bias: a ReLU and average pooling commute with it), and ``reader``'s weights
    from that channel set to 0."""
    conv = model.get_layer(layer)
    kernel, bias = conv.get_weights()
    kernel[..., channel] *= factor
    bias[channel] *= factor
    conv.set_weights([kernel, bias])
    nxt = model.get_layer(reader)
    weights = nxt.get_weights()
    weights[0][..., channel, :] = 0.0
    nxt.set_weights(weights)
    return model


def with_outlier_bn_channel(model, bn: str, reader: str, factor: float = 300.0, channel: int = 0):
    """The same for a convolution without bias followed by BatchNormalization ``bn`` (MobileNetV2's
    linear bottleneck ``block_N_project`` + ``block_N_project_BN``): the BN's output channel ``channel``
    scaled by ``factor`` (gamma and beta), and ``reader``'s kernel weights from that channel set to 0.
    ``bn`` and ``reader`` are layer objects or names of ``model``'s own layers."""
    bn = model.get_layer(bn) if isinstance(bn, str) else bn
    reader = model.get_layer(reader) if isinstance(reader, str) else reader
    gamma, beta, moving_mean, moving_var = bn.get_weights()
    gamma[channel] *= factor
    beta[channel] *= factor
    bn.set_weights([gamma, beta, moving_mean, moving_var])
    weights = reader.get_weights()
    weights[0][..., channel, :] = 0.0
    reader.set_weights(weights)
    return model

"""Magnitude pruning (worker process only): ``prune_low_magnitude`` with a polynomial decay to the
target sparsity on every layer the prune registry takes, fine-tuned and stripped; and the sparsity of
the pruned kernels."""

from __future__ import annotations

import numpy as np

from .finetune import at_layer, fine_tune, import_tfmot, log_line
from .jobs import QuantizeError


def pruned_kernels(model) -> list[tuple[str, np.ndarray]]:
    """The kernels magnitude pruning acts on: Conv2D and Dense kernels (tfmot's pruning registry)."""
    out = []
    for layer in model.layers:
        if type(layer).__name__ in ("Conv2D", "Dense", "Conv1D", "Conv3D", "Conv2DTranspose"):
            out.append((layer.name, np.asarray(layer.get_weights()[0])))
        elif type(layer).__name__ in ("SeparableConv2D", "SeparableConv1D"):
            out.append((layer.name, np.asarray(layer.get_weights()[1])))
    return out


def sparsity_report(kernels: list[tuple[str, np.ndarray]]) -> dict:
    """The share of zeros over all ``kernels`` and per layer (as :func:`pruned_kernels` lists them)."""
    zeros = sum(int(np.count_nonzero(k == 0)) for _, k in kernels)
    total = sum(int(k.size) for _, k in kernels)
    return {
        "sparsity": zeros / total if total else 0.0,
        "zeros": zeros,
        "weights": total,
        "per_layer": {name: float(np.mean(k == 0)) for name, k in kernels},
    }


def _prune_layers(tfk_model, schedule):
    """``prune_low_magnitude`` on each layer the prune registry supports; the others (Rescaling,
    Normalization: nothing to prune) stay as they are. The whole-model call refuses any model that holds
    one of them, as the input preprocessing of a user's model does."""
    import tf_keras
    from tensorflow_model_optimization.python.core.sparsity.keras.prunable_layer import PrunableLayer
    from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry

    sp = import_tfmot().sparsity.keras
    prunable = [
        layer.name
        for layer in tfk_model.layers
        if isinstance(layer, PrunableLayer) or (PruneRegistry.supports(layer) and layer.weights)
    ]
    if not prunable:
        raise QuantizeError(f"model '{tfk_model.name}' has no layer with weights to prune")

    def wrap(layer):
        return sp.prune_low_magnitude(layer, pruning_schedule=schedule) if layer.name in prunable else layer

    return tf_keras.models.clone_model(tfk_model, clone_function=wrap)


def prune_model(tfk_model, ds, opts, sparsity, steps, epochs):
    """Prune-finetune-strip the tf_keras model to ``sparsity``; returns (stripped tf_keras model, train
    metrics)."""
    tfmot = import_tfmot()
    sp = tfmot.sparsity.keras
    total = steps * epochs
    if total < 2:
        raise QuantizeError(
            f"pruning needs at least 2 training steps to reach the sparsity schedule (got {total}); "
            "raise --epochs, --max-steps or --train-fraction"
        )
    # Masks are updated every `frequency` steps (the step counter runs 1..total); the final sparsity is
    # reached at `end_step`, a multiple of it, leaving the last ~20% of the steps to recover.
    frequency = max(1, min(100, total // 10))
    end_step = max(frequency, (int(total * 0.8) // frequency) * frequency)
    schedule = sp.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=float(sparsity),
        begin_step=0,
        end_step=end_step,
        frequency=frequency,
    )
    try:
        pruned = _prune_layers(tfk_model, schedule)
    except ValueError as err:
        names = {layer.name: type(layer).__name__ for layer in tfk_model.layers}
        raise QuantizeError(f"cannot prune the model{at_layer(str(err), names)}: {err}") from err
    log_line(
        f"[prune] {total} steps to sparsity {sparsity:.2f} (final at step {end_step}, every {frequency})"
    )
    metrics = fine_tune(pruned, ds, opts, steps, epochs, "prune", callbacks=[sp.UpdatePruningStep()])
    stripped = sp.strip_pruning(pruned)
    return stripped, metrics

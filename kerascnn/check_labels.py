"""The embedding ``kerascnn check`` compares images in, and likely label errors by confident learning.

**Embedding.** With ``auto``, colour images larger than 32 px are embedded by a pretrained backbone when
its ImageNet weights are in the Keras cache (:func:`kerascnn.models.pretrained.cached`; MobileNet v2, then
v1, without their classifier, at the size of the cached file nearest EMBED_SIDE, global-average-pooled,
the image's and its mirror image's features added (a mirrored copy gets the same embedding) and
L2-normalised), as the recipe fine-tunes one for such photos; nothing is downloaded. Images whose
embeddings are within NEAR_COSINE are near-duplicates too: on the 501 tuxpaint photos of
BENCHMARKS.md (MobileNet v1 at 224), their 10 mirrored pairs (re-drawn, not pixel mirrors) are at
0.967 to 0.999 (without the mirror's features, 0.936 to 0.982), recoloured drawings (traffic lights,
flags, apples) at 0.965 to 0.994, the closest two distinct drawings (a polo shirt and a t-shirt) at
0.963: set on that one set of photos. Otherwise (no
weights cached, small or grey images, ``--embedding pixels``) the embedding is the images' own pixels,
small: the 16x16 grey thumbnail, and for colour images the 8x8 colour one (448 numbers). Either way the
result says which.

**Label issues** (Northcutt et al. 2021, "Confident Learning: Estimating Uncertainty in Dataset Labels"):
every image's class probabilities come from a linear probe that did not see it (a multinomial logistic
regression, :func:`kerascnn.probe.fit_logistic`, with a stronger penalty than training's (LABEL_C), on
the standardised embedding, K stratified folds; each fold's probe fitted on at most MAX_FIT images),
and cleanlab, the reference implementation of confident learning (what its Datalab runs), flags the
images whose given label the out-of-fold probabilities contradict (``find_label_issues``, pruned by the
estimated noise rates) and ranks them by the probability of their given label
(``get_label_quality_scores``, self-confidence: lowest first; it ranked flipped labels first more often
than the normalized margin or the confidence-weighted entropy: 175 of 250 against 121 and 166 in the
measurement of LABEL_C, at C=1). The probe's out-of-fold accuracy is reported with them: a weak
embedding makes weak suggestions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .check_config import FOLDS
from .check_images import COLOUR, THUMB, Facts

EMBED_SIDE = 160  # the backbone's input side, when a cached file of that size is there (else the nearest)
BACKBONES = ("mobilenet_v2", "mobilenet_v1")  # phone-sized, fast on a CPU; the first one cached is used
BACKBONE_MIN_SIDE = 32  # images up to this side (digits, Fashion-MNIST) keep the pixel embedding
NEAR_COSINE = 0.965  # backbone near-duplicates: flip-averaged embeddings at least this close (cosine)
MAX_FIT = 10_000  # each fold's probe is fitted on at most this many images (a stratified sample)
# The probe's L2 penalty (inverse strength; training's probe uses 1): with 5% of 5,000 Fashion-MNIST labels
# flipped (pixel embedding), 201 of the 250 flipped ranked in the lowest 5% at C=0.03 against 175 at C=1
# (186 at 0.3, 194 at 0.1, 202 at 0.01); on the 501 tuxpaint photos (MobileNet v1, 25 flipped) C made no
# difference (20 and 16 of 25 at C=1, 20 and 17 at 0.03, two draws of the flips).
LABEL_C = 0.03
GREY = 16  # the grey thumbnail's side in the pixel embedding


@dataclass
class Embedding:
    name: str  # "pixels" or the backbone ("mobilenet_v1")
    text: str  # for a person: what it is and why it was chosen
    vectors: np.ndarray  # (N, D) float32; zeros for images that did not decode
    unit: bool  # L2-normalised (cosine = dot product): a backbone's


def pixel_embedding(facts: Facts, colour: bool, why: str) -> Embedding:
    """The 16x16 grey thumbnail (and the 8x8 colour one when ``colour``), scaled to [0, 1]."""
    n = len(facts.thumb)
    grey = facts.thumb.reshape(n, GREY, THUMB // GREY, GREY, THUMB // GREY).astype(np.float32).mean((2, 4))
    parts = [grey.reshape(n, -1) / 255.0]
    if colour:
        parts.append(facts.colour.reshape(n, -1).astype(np.float32) / 255.0)
    what = f"{GREY}x{GREY} grey" + (f" + {COLOUR}x{COLOUR} colour" if colour else "")
    return Embedding("pixels", f"pixels ({what} thumbnails; {why})", np.concatenate(parts, 1), False)


def cached_backbone():
    """The pretrained file to embed with: the first family of BACKBONES with a file (without its
    classifier) in the Keras cache, the size nearest EMBED_SIDE, the width nearest 1.0; else None."""
    from .models import pretrained

    for model in BACKBONES:
        have = [f for f in pretrained.cached(model, top=False) if pretrained.hash_status(f) != "md5 mismatch"]
        if have:
            return min(have, key=lambda f: (abs((f.size or 224) - EMBED_SIDE), abs((f.alpha or 1.0) - 1.0)))
    return None


def backbone_embedding(wanted, read, n: int, ok: np.ndarray, say=None, batch: int = 64) -> Embedding:
    """The pooled, L2-normalised features of the images ``ok`` (positions) by the pretrained ``wanted``
    (a WeightsFile); ``read(positions, side)`` gives their uint8 RGB pixels at side x side."""
    from .models import build, pretrained

    side = wanted.size or 224
    alpha = wanted.alpha or 1.0
    model = build(wanted.model, input_shape=(side, side, 3), include_top=False, pooling="avg", alpha=alpha)
    pretrained.load_imagenet(model, wanted.model, alpha, top=False, download=False)
    mean, std = (np.asarray(v, np.float32) for v in pretrained.normalization(wanted.model))
    vectors = None
    for start in range(0, len(ok), batch):
        positions = ok[start : start + batch]
        x = (read(positions, side).astype(np.float32) - mean) / std
        feats = np.array(model(x, training=False), np.float32).reshape(len(positions), -1)
        feats += np.asarray(model(x[:, :, ::-1], training=False), np.float32).reshape(len(positions), -1)
        if vectors is None:
            vectors = np.zeros((n, feats.shape[1]), np.float32)
        vectors[positions] = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        if say and (start // batch) % 50 == 49:
            say(f"check: embedded {start + len(positions):,d} of {len(ok):,d} images")
    text = (
        f"{wanted.model}{f' alpha {alpha:g}' if alpha != 1.0 else ''} at {side}x{side}, ImageNet weights "
        f"({wanted.name}, from the Keras cache), global-average-pooled, L2-normalised"
    )
    return Embedding(
        wanted.model, text, vectors if vectors is not None else np.zeros((n, 1), np.float32), True
    )


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number per image: each class's images shuffled and dealt round-robin over the folds."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(labels), np.int64)
    offset = 0
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        fold[members] = (np.arange(len(members)) + offset) % folds
        offset += len(members)  # the next class starts where this one stopped: folds stay even
    return fold


def _capped(train: np.ndarray, labels: np.ndarray, cap: int, rng) -> np.ndarray:
    """At most ``cap`` of the positions ``train``, each class keeping its share (at least one)."""
    if len(train) <= cap:
        return train
    keep = []
    for c in np.unique(labels[train]):
        members = train[labels[train] == c]
        take = max(1, int(round(cap * len(members) / len(train))))
        keep.append(rng.choice(members, min(take, len(members)), replace=False))
    return np.sort(np.concatenate(keep))


def out_of_fold(x: np.ndarray, labels: np.ndarray, classes: int, folds: int = FOLDS, seed: int = 0,
                max_fit: int = MAX_FIT, say=None) -> np.ndarray:  # fmt: skip
    """Each image's class probabilities (N, classes) from a logistic probe fitted on the other folds."""
    from .probe import fit_logistic

    x = np.asarray(x, np.float64)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    fold = stratified_folds(labels, folds, seed)
    rng = np.random.default_rng(seed)
    probs = np.zeros((len(x), classes))
    for f in range(folds):
        held = np.flatnonzero(fold == f)
        if not len(held):
            continue
        train = _capped(np.flatnonzero(fold != f), labels, max_fit, rng)
        weights, bias = fit_logistic(x[train], labels[train], classes, c=LABEL_C)
        z = x[held] @ weights + bias
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        probs[held] = p / p.sum(1, keepdims=True)
        if say:
            say(f"check: probe fold {f + 1} of {folds} fitted on {len(train):,d} images")
    return probs


def label_issues(x: np.ndarray, labels: np.ndarray, folds: int = FOLDS, seed: int = 0, say=None) -> dict:
    """Confident learning on the rows of ``x`` with ``labels`` (0..K-1, at least two classes present):
    {"probs", "quality" (per image, lowest first is worst), "issues" (positions, worst first),
    "accuracy" (the probe's out-of-fold accuracy), "classes" (the class ids present, the columns of
    probs)}."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    present, y = np.unique(labels, return_inverse=True)
    folds = max(2, min(folds, int(np.bincount(y).max())))
    probs = out_of_fold(x, y, len(present), folds, seed, say=say)
    issues = find_label_issues(
        y, probs, filter_by="prune_by_noise_rate", return_indices_ranked_by="self_confidence", n_jobs=1
    )
    quality = get_label_quality_scores(y, probs, method="self_confidence")
    return {
        "probs": probs,
        "quality": quality,
        "issues": np.asarray(issues, np.int64),
        "accuracy": float((probs.argmax(1) == y).mean()),
        "classes": present,
        "folds": folds,
    }

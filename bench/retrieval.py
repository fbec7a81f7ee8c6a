"""Retrieval, measured: search speed (NumPy exact vs FAISS) and latent-vs-pixel precision on Fashion-MNIST.

    .venv/bin/python bench/retrieval.py eval RUN_DIR     # index the train split, all 10,000 test queries
    .venv/bin/python bench/retrieval.py speed INDEX      # queries/s on the index's gallery

``eval``: ``kerascnn index RUN --data fashion_mnist --out INDEX --eval`` (60,000 train images as the
gallery, the 10,000 test images as queries), timed; it prints P@1/5/10 and mAP for the latent space and
for raw pixels.

``speed``: search time only (the query vectors are given; embedding a query is the model's forward pass,
timed separately with the index's model). Single queries: the median over ``--queries`` calls; batches
of 100: the median per batch divided by 100. NumPy and FAISS run interleaved in the same process, for
the index's vectors and for random unit vectors of ``--wide`` dimensions (a MobileNet-sized embedding).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def _speed_rows(index, queries: np.ndarray, n: int, rounds: int) -> dict:
    backends = {"numpy": index.backend("numpy"), "faiss": index.backend("faiss")}
    single = {b: [] for b in backends}
    batch = {b: [] for b in backends}
    for r in range(rounds):
        picks = queries[(np.arange(n) + r * n) % len(queries)]
        for name, backend in backends.items():
            times = []
            for q in picks:
                t0 = time.perf_counter()
                backend.search(q[None], 10)
                times.append(time.perf_counter() - t0)
            single[name].append(statistics.median(times) * 1000)
            times = []
            for start in range(0, max(300, n) - 99, 100):
                chunk = queries[start % (len(queries) - 100) :][:100]
                t0 = time.perf_counter()
                backend.search(chunk, 10)
                times.append(time.perf_counter() - t0)
            batch[name].append(statistics.median(times) * 1000 / 100)
    return {name: (statistics.median(single[name]), statistics.median(batch[name])) for name in backends}


def speed(args):
    from kerascnn import retrieval

    index = retrieval.Index.load(args.index)
    for backend in ("numpy", "faiss"):  # build both (FAISS copies the vectors in) before timing
        index.backend(backend)
    rng = np.random.default_rng(0)
    queries = retrieval.l2_normalize(index.vectors[rng.permutation(len(index))[:2000]] + 0.01)
    wide = retrieval.Index(
        retrieval.l2_normalize(rng.normal(size=(len(index), args.wide)).astype(np.float32)),
        index.ids, index.labels, index.class_names, index.meta,
    )  # fmt: skip
    wide_queries = retrieval.l2_normalize(rng.normal(size=(2000, args.wide)).astype(np.float32))
    name = f"{index.vectors.shape[1]}-d ({Path(args.index).name})"
    rows = {
        name: _speed_rows(index, queries, args.queries, args.rounds),
        f"{args.wide}-d (random)": _speed_rows(wide, wide_queries, args.queries, args.rounds),
    }
    extractor = retrieval.load_extractor(index.identity["model_file"], layer=index.identity["layer"])
    image = np.zeros((1, *extractor.input_shape), np.uint8)
    times = []
    for _ in range(51):
        t0 = time.perf_counter()
        extractor.embed(image)
        times.append(time.perf_counter() - t0)
    embed_ms = statistics.median(times[1:]) * 1000
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores; gallery {len(index)} vectors, top-10, "
          f"median of {args.queries} queries x {args.rounds} interleaved rounds\n")  # fmt: skip
    print("| gallery | backend | ms / single query | queries/s (single) | ms / query in batches of 100 "
          "| queries/s (batch 100) |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|")
    for gallery, by_backend in rows.items():
        for name, (one, batched) in by_backend.items():
            print(f"| {gallery} | {name} | {one:.3f} | {1000 / one:,.0f} | {batched:.4f} "
                  f"| {1000 / batched:,.0f} |")  # fmt: skip
    print(f"\nembedding one query image with {extractor.model_name} ({extractor.layer}): {embed_ms:.2f} ms")
    print(json.dumps({g: {b: {"single_ms": v[0], "batch100_ms_per_query": v[1]} for b, v in r.items()}
                      for g, r in rows.items()}, indent=1))  # fmt: skip


def evaluate(args):
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-retrieval-")) / "fashion_train.npz"
    report = out.with_suffix(".json")
    cmd = [sys.executable, "-m", "kerascnn.cli", "index", args.run, "--data", "fashion_mnist", "--out",
           str(out), "--overwrite", "--eval", "--json", str(report)]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"\nindex + evaluation took {(time.perf_counter() - t0) / 60:.1f} min; index: {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("index")
    s.add_argument("--queries", type=int, default=500)
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--wide", type=int, default=1280)
    e = sub.add_parser("eval")
    e.add_argument("run")
    e.add_argument("--out", default=None)
    args = parser.parse_args()
    {"speed": speed, "eval": evaluate}[args.what](args)


if __name__ == "__main__":
    main()

"""Does class-restricted guide search stay fast at COCO scale?

    python benchmarks/bench_index.py [--vectors 120000] [--dim 256] [--classes 21 81]

Synthetic clustered prototypes (a centre per class, a sub-centre per "look" of
the class, noise per image; L2-normalised) shaped like VOC (21 classes) and COCO
(81). For each factory: build seconds, queries/s of `search_by_class` for a batch
of 16 images × 3 classes (48 queries, the way `rectify` searches), and recall@1
against exact class-restricted search. Target: an IVF setting with recall@1 ≥ 0.95
at ≥ 10× Flat's queries/s; "auto" is what `index build --factory auto` picks
(IVF with ~4·√N lists, nprobe raised until recall@1 ≥ 0.95; build time includes
that tuning). Writes a JSON record to benchmarks/results/.
"""

import argparse
import time
from pathlib import Path

import numpy as np
from rich.table import Table

from cisctool.console import console
from cisctool.method.index import auto_factory, build_index, search_by_class, tune_nprobe

from records import write_record

ROOT = Path(__file__).resolve().parent
BATCH_QUERIES = 48
FACTORIES = ("Flat", "auto", "IVF256,Flat", "HNSW32")


def synthetic_prototypes(count: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """count unit vectors: class centre + one of 8 looks of the class + per-image noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)).astype(np.float32)
    looks = rng.standard_normal((classes, 8, dim)).astype(np.float32) * 0.6
    labels = rng.integers(0, classes, count)
    vectors = centres[labels] + looks[labels, rng.integers(0, 8, count)]
    vectors += rng.standard_normal((count, dim)).astype(np.float32) * 0.5
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=120_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--classes", type=int, nargs="+", default=[21, 81])
    parser.add_argument("--factories", nargs="+", default=list(FACTORIES))
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    rows = []
    for classes in args.classes:
        vectors, labels = synthetic_prototypes(args.vectors, args.dim, classes, seed=classes)
        queries, query_classes = synthetic_prototypes(2000, args.dim, classes, seed=classes)  # same centres
        rows_of = np.arange(args.vectors)
        exact = _exact_top1(vectors, labels, queries, query_classes)
        for factory in args.factories:
            started = time.perf_counter()
            chosen = auto_factory(args.vectors) if factory == "auto" else factory
            prototype_index = build_index(vectors, rows_of, labels, np.ones(args.vectors), [], chosen)
            if factory == "auto" and chosen != "Flat":  # what `index build --factory auto` does
                tune_nprobe(prototype_index, vectors)
                chosen += f" nprobe {prototype_index.metadata['nprobe']}"
            factory = f"auto = {chosen}" if factory == "auto" else factory
            build = time.perf_counter() - started
            found = search_by_class(prototype_index, queries, query_classes, 1)[1][:, 0]
            recall = float((found == exact).mean())
            batch = slice(0, BATCH_QUERIES)
            started = time.perf_counter()
            for _ in range(args.repeats):
                search_by_class(prototype_index, queries[batch], query_classes[batch], 1)
            per_second = BATCH_QUERIES * args.repeats / (time.perf_counter() - started)
            rows.append({"classes": classes, "factory": factory, "build_seconds": build,
                         "queries_per_second": per_second, "recall_at_1": recall})  # fmt: skip
            console.print(f"{classes} classes, {factory}: build {build:.2f} s, {per_second:.0f} q/s, recall {recall:.3f}")
    for row in rows:
        flat = next(r for r in rows if r["classes"] == row["classes"] and r["factory"] == "Flat")  # listed first
        row["speed_vs_flat"] = row["queries_per_second"] / flat["queries_per_second"]
    console.print(_table(rows, args))
    out = write_record("index", {"vectors": args.vectors, "dim": args.dim, "batch_queries": BATCH_QUERIES,
                                 "rows": rows})  # fmt: skip
    console.print(f"wrote {out}")


def _exact_top1(vectors: np.ndarray, labels: np.ndarray, queries: np.ndarray, query_classes: np.ndarray) -> np.ndarray:
    """The true nearest same-class vector of each query (brute force, per class)."""
    best = np.full(len(queries), -1, dtype=np.int64)
    for cls in np.unique(query_classes):
        members = np.flatnonzero(labels == cls)
        chosen = np.flatnonzero(query_classes == cls)
        best[chosen] = members[np.argmax(queries[chosen] @ vectors[members].T, axis=1)]
    return best


def _table(rows: list[dict], args: argparse.Namespace) -> Table:
    table = Table(title=f"class-restricted search, {args.vectors} × {args.dim}, batches of {BATCH_QUERIES} queries")
    for column in ("classes", "factory", "build s", "queries/s", "× Flat", "recall@1"):
        table.add_column(column, justify="left" if column == "factory" else "right")
    for row in rows:
        table.add_row(str(row["classes"]), row["factory"], f"{row['build_seconds']:.2f}",
                      f"{row['queries_per_second']:.0f}", f"{row['speed_vs_flat']:.1f}", f"{row['recall_at_1']:.3f}")  # fmt: skip
    return table


if __name__ == "__main__":
    main()

"""Benchmark of the search index (fashion_bench/search/index.py): flat vs HNSW vs IVF on clustered vectors.

For N x D random-but-clustered L2-normalised vectors (default 1,000,000 x 512; ``BENCH_INDEX_N`` or ``--n`` for a
quick run), each kind is built in its own (spawned) process and measured there: build time (training, adding and
tuning the search depth to recall@10 >= 0.95, included), peak memory added by the build (VmHWM reset before it),
the serialised index size, single-query latency p50 / p99, and recall@10 against exact search on held-out queries
(vectors drawn from the same clusters, not indexed).

    python tests/bench/bench_index.py [--n 1000000] [--dim 512] [--kinds flat,hnsw,ivf] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import time
from pathlib import Path

import faiss
import numpy as np

from fashion_bench.search.index import IndexPolicy, build_index, normalized, recall

CLUSTERS = 1000
QUERIES = 1000
FLAT_QUERIES = 200  # single exact queries over 1M vectors are slow: fewer suffice for stable percentiles
K = 10


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` unit vectors around CLUSTERS random centres (noise larger than a centre: neighbours often cross clusters)."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((CLUSTERS, dim), dtype=np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        labels = rng.integers(0, CLUSTERS, stop - start)
        out[start:stop] = centres[labels] + 1.5 * rng.standard_normal((stop - start, dim), dtype=np.float32)
    return normalized(out)


def _status(field: str) -> int:
    """A memory figure of this process in bytes (VmRSS, VmHWM) from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def measure(kind: str, n: int, dim: int, truth: np.ndarray, queries: np.ndarray) -> dict:
    vectors = clustered(n, dim, seed=1)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status("VmRSS")
    start = time.perf_counter()
    built = build_index(vectors, IndexPolicy(), kind=kind)
    build_s = time.perf_counter() - start
    peak = _status("VmHWM") - before
    faiss.omp_set_num_threads(1)  # single queries as a server answers them, one per core
    count = FLAT_QUERIES if kind == "flat" else QUERIES
    latencies, found = [], []
    for q in queries[:count]:
        t = time.perf_counter()
        found.append(built.index.search(q[None], K)[1][0])
        latencies.append(time.perf_counter() - t)
    ms = np.array(latencies) * 1000
    return {
        "kind": kind, "params": built.params, "build_s": round(build_s, 2), "build_peak_mb": round(peak / 2**20),
        "index_mb": round(faiss.serialize_index(built.index).size / 2**20), "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3), "queries": count,
        "recall_at_10_heldout": round(recall(np.array(found), truth[:count]), 4),
        "recall_at_10_stored": round(built.recall_at_10, 4),
    }


def _child(args: tuple) -> dict:
    return measure(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=int(os.environ.get("BENCH_INDEX_N", 1_000_000)))
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--kinds", default="flat,hnsw,ivf")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    queries = clustered(QUERIES, args.dim, seed=2)
    exact = faiss.IndexFlatIP(args.dim)
    exact.add(clustered(args.n, args.dim, seed=1))
    truth = exact.search(queries, K)[1]
    del exact
    rows = []
    context = multiprocessing.get_context("spawn")  # a forked OpenMP runtime can hang
    for kind in args.kinds.split(","):
        with context.Pool(1) as pool:  # a fresh process per kind: its peak memory is its own
            rows.append(pool.apply(_child, ((kind, args.n, args.dim, truth, queries),)))
        print(json.dumps(rows[-1]), flush=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, faiss {faiss.__version__}"
    print(f"\nN = {args.n:,} x {args.dim}, {machine}\n")
    print("| index | parameters | build s | build peak MB | index MB | p50 ms | p99 ms | recall@10 held-out | recall@10 stored |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items() if k != "recall_queries") or "exact"
        print(f"| {r['kind']} | {params} | {r['build_s']} | {r['build_peak_mb']} | {r['index_mb']} | {r['p50_ms']} | "
              f"{r['p99_ms']} | {r['recall_at_10_heldout']} | {r['recall_at_10_stored']} |")
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "dim": args.dim, "machine": machine, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

"""Evaluation benchmark: evaluate() against torchmetrics and a bare faiss search, and its peak memory.

    python tests/bench/bench_metrics.py [--quick] [--threads N] [--cpu-time]

Timings are the median of interleaved repeats after a warm-up (the machine may be shared), torch and faiss
at the same thread count; ``--cpu-time`` measures process CPU time instead of wall time, which a busy
machine disturbs much less at one thread. torchmetrics, which is slow, runs once. Peak memory is measured in a child process (VmHWM), above the RSS it had once its
inputs were built, so it counts what evaluation itself allocates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from fashion_bench.retrieval import EvalInputs, Protocol, evaluate, run_protocol
from fashion_bench.retrieval.index import QUERY_BLOCK, Embeddings, score_blocks

FULL = {"compare": (1000, 20000, 256), "memory": (2000, 200000, 512), "repeats": 5}
QUICK = {"compare": (300, 5000, 128), "memory": (500, 50000, 256), "repeats": 3}
TOP_K = 50


def make_case(n_q: int, n_g: int, dim: int, seed: int = 0, noise: float = 3.0, related: bool = True):
    """Unit gallery vectors; each query has 1-3 positives and is their normalised sum plus noise (R@10 about
    0.85, mAP about 0.5), or, with ``related=False``, unrelated to them (positives rank anywhere)."""
    rng = np.random.default_rng(seed)
    g = np.empty((n_g, dim), np.float32)
    for start in range(0, n_g, 8192):  # in chunks, so that building the data sets no memory peak
        part = rng.standard_normal((min(8192, n_g - start), dim), dtype=np.float32)
        g[start : start + len(part)] = part / np.linalg.norm(part, axis=1, keepdims=True)
    positives = [rng.choice(n_g, rng.integers(1, 4), replace=False).tolist() for _ in range(n_q)]
    q = rng.standard_normal((n_q, dim), dtype=np.float32) * noise / np.sqrt(dim)
    if related:
        q += np.stack([g[p].sum(0) for p in positives]) / np.sqrt([[len(p)] for p in positives])
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32), g, positives


def protocol_inputs(q: np.ndarray, g: np.ndarray, positives: list[list[int]], **fields: list) -> EvalInputs:
    """The same case for run_protocol("cir"): no query has its reference image in the gallery."""
    ids = [str(i) for i in range(max(len(q), len(g)))]
    return EvalInputs(
        torch.from_numpy(q), torch.from_numpy(g), ids[: len(q)], ids[: len(g)], positives,
        query_image_index=[-1] * len(q), **fields,
    )


CLOCK = time.perf_counter  # or time.process_time (--cpu-time)


def median_of(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median time of each function over interleaved repeats, after one warm-up call each."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for name, fn in fns.items():
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            start = CLOCK()
            fn()
            times[name].append(CLOCK() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def faiss_search(q: np.ndarray, g: np.ndarray) -> None:
    import faiss

    index = faiss.IndexFlatIP(g.shape[1])
    index.add(g)
    index.search(q, TOP_K)


def torchmetrics_values(q: np.ndarray, g: np.ndarray, positives: list[list[int]]) -> tuple[dict, float]:
    """HitRate@10 and MAP the torchmetrics way: every (query, item) score flattened with its query index."""
    from fashion_bench._env import import_torchvision

    import_torchvision()  # torchmetrics imports torchvision; its C extension may not load beside CPU torch
    from torchmetrics.retrieval import RetrievalHitRate, RetrievalMAP

    start = time.perf_counter()
    scores = torch.from_numpy(q) @ torch.from_numpy(g).T
    preds = (scores - scores.min() + 1).flatten()  # torchmetrics drops scores <= 0 from AP
    target = torch.zeros_like(scores, dtype=torch.bool)
    for i, pos in enumerate(positives):
        target[i, pos] = True
    indexes = torch.arange(len(q))[:, None].expand_as(scores).flatten()
    values = {
        "R@10": RetrievalHitRate(top_k=10)(preds, target.flatten(), indexes).item(),
        "mAP": RetrievalMAP()(preds, target.flatten(), indexes).item(),
    }
    return values, time.perf_counter() - start


def score_matrix(q: np.ndarray, g: np.ndarray) -> None:
    """The floor: the float32 score blocks alone, the same GEMMs evaluation computes, nothing else."""
    query, gallery = Embeddings.prepare(q, "q"), Embeddings.prepare(g, "g")
    for rows in torch.arange(len(q)).split(QUERY_BLOCK):
        for _ in score_blocks(query, gallery, rows):
            pass


def with_duplicates(g: np.ndarray, positives: list[list[int]], seed: int = 1) -> np.ndarray:
    """A quarter of the gallery duplicates other items, a third of the positives among the copied ones:
    exact ties, also at the positives' own scores."""
    rng = np.random.default_rng(seed)
    g = g.copy()
    targets = rng.choice(len(g), len(g) // 4, replace=False)
    pool = np.array([p[0] for p in positives])
    sources = np.where(rng.random(len(targets)) < 1 / 3, rng.choice(pool, len(targets)), rng.choice(len(g), len(targets)))
    g[targets] = g[sources]
    return g


def regimes(q: np.ndarray, g: np.ndarray, positives: list[list[int]], weak: tuple, repeats: int) -> dict[str, float]:
    """Median times of every regime, interleaved with the faiss search and the score matrix on the same vectors."""
    q_weak, pos_weak = weak
    rng = np.random.default_rng(2)
    n_q, n_g = len(q), len(g)
    exclude = [rng.choice(n_g, 5, replace=False).tolist() for _ in range(n_q)]
    subset = [sorted({*p, *rng.choice(n_g, 5).tolist()}) for p in positives]
    categories = [str(i % 3) for i in range(n_q)]
    category_inputs = protocol_inputs(q, g, positives, query_category=categories,
                                      gallery_category=[str(i % 3) for i in range(n_g)])
    plain = Protocol("bench-plain", "cir")
    tied = with_duplicates(g, positives)
    return median_of(
        {
            "faiss": lambda: faiss_search(q, g),
            "GEMM": lambda: score_matrix(q, g),
            "strong: evaluate()": lambda: evaluate(q, g, positives),
            "weak: evaluate()": lambda: evaluate(q_weak, g, pos_weak),
            "strong: run_protocol(top_n=50)": lambda: run_protocol("cir", protocol_inputs(q, g, positives), top_n=TOP_K),
            "weak: run_protocol(top_n=50)": lambda: run_protocol("cir", protocol_inputs(q_weak, g, pos_weak), top_n=TOP_K),
            "plain: run_protocol(top_n=0)": lambda: run_protocol(plain, protocol_inputs(q, g, positives), top_n=0),
            "per-category galleries": lambda: run_protocol(
                Protocol("bench-category", "cir", category_gallery=True), category_inputs, top_n=0),
            "CIRR subsets": lambda: run_protocol(
                Protocol("bench-cirr", "cir", subset_ks=(1, 2, 3)), protocol_inputs(q, g, positives, subset=subset),
                top_n=0),
            "plain: evaluate()": lambda: evaluate(q, g, positives),
            "exclusions (5 per query)": lambda: evaluate(q, g, positives, exclude=exclude),
            "ties (a quarter of the gallery duplicated)": lambda: evaluate(q, tied, positives),
        },
        repeats,
    )


def compare(sizes: tuple[int, int, int], repeats: int) -> list[str]:
    n_q, n_g, dim = sizes
    q, g, positives = make_case(n_q, n_g, dim)
    q_rand, _, pos_rand = make_case(n_q, n_g, dim, related=False)
    values = evaluate(q, g, positives)
    tm_values, tm_time = torchmetrics_values(q, g, positives)
    times = regimes(q, g, positives, (q_rand, pos_rand), repeats)
    ev = times["strong: evaluate()"]
    diff = max(abs(values[k] - tm_values[k]) for k in tm_values)
    shape = f"{n_q:,} x {n_g:,} x {dim}"
    lines = [
        f"| evaluate() vs torchmetrics HitRate@10 + MAP, {shape} | {ev:.3f} s vs {tm_time:.2f} s | "
        f"**{tm_time / ev:.0f}x** faster (goal >= 20x); R@10 {values['R@10']:.4f} / {tm_values['R@10']:.4f}, "
        f"mAP {values['mAP']:.4f} / {tm_values['mAP']:.4f}, max diff {diff:.1e} | |",
        f"| bare faiss IndexFlatIP top-{TOP_K} / the score matrix alone (same GEMM blocks), {shape} | "
        f"{times['faiss']:.3f} s / {times['GEMM']:.3f} s | faiss = {times['faiss'] / times['GEMM']:.2f}x the GEMM | |",
    ]
    plain = {"per-category galleries": "plain: run_protocol(top_n=0)", "CIRR subsets": "plain: run_protocol(top_n=0)",
             "exclusions (5 per query)": "plain: evaluate()",
             "ties (a quarter of the gallery duplicated)": "plain: evaluate()"}
    for name, t in times.items():
        if name in ("faiss", "GEMM"):
            continue
        vs_plain = f"{t / times[plain[name]]:.2f}x plain (goal <= 1.5x)" if name in plain else ""
        lines.append(f"| {name} | {t:.3f} s | **{t / times['faiss']:.2f}x** faiss, {t / times['GEMM']:.2f}x GEMM | "
                     f"{vs_plain} |")
    return lines


def peak_rss_mib(reset: bool = False) -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries that over from the forked parent
    across exec. ``reset`` restarts the peak from the current RSS (writing 5 to clear_refs)."""
    if reset:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def memory_child(n_q: int, n_g: int, dim: int) -> None:
    """In a fresh process: build the inputs, then report the peak RSS of each evaluation above them. A small
    run first loads the compiled kernels and starts the threads: once per process, not part of the scaling."""
    small_q, small_g, small_positives = make_case(300, 5000, dim)
    run_protocol("cir", protocol_inputs(small_q, small_g, small_positives), top_n=TOP_K)
    q, g, positives = make_case(n_q, n_g, dim)
    inputs = protocol_inputs(q, g, positives)
    out = {"inputs_mib": (q.nbytes + g.nbytes) / 2**20, "baseline_mib": peak_rss_mib(reset=True)}
    start = CLOCK()
    evaluate(q, g, positives)
    out["evaluate_s"] = CLOCK() - start
    out["evaluate_peak_mib"] = peak_rss_mib()
    out["protocol_baseline_mib"] = peak_rss_mib(reset=True)
    start = CLOCK()
    run_protocol("cir", inputs, top_n=TOP_K)
    out["protocol_s"] = CLOCK() - start
    out["protocol_peak_mib"] = peak_rss_mib()
    start = CLOCK()
    score_matrix(q, g)
    out["gemm_s"] = CLOCK() - start
    print(json.dumps(out))


def memory(sizes: tuple[int, int, int], flags: list[str]) -> list[str]:
    n_q, n_g, dim = sizes
    cmd = [sys.executable, __file__, *flags, "--memory-child", str(n_q), str(n_g), str(dim)]
    m = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    extra = m["evaluate_peak_mib"] - m["baseline_mib"]
    extra_protocol = m["protocol_peak_mib"] - m["protocol_baseline_mib"]
    big_q, big_g, big_d = 10_000, 1_000_000, 512
    scale = big_q * big_g * big_d / (n_q * n_g * dim)
    big_inputs = (big_q + big_g) * big_d * 4 / 2**20
    return [
        f"| large: evaluate(), {n_q:,} x {n_g:,} x {dim} (inputs {m['inputs_mib']:.0f} MiB), once | "
        f"{m['evaluate_s']:.1f} s vs GEMM {m['gemm_s']:.1f} s | **{m['evaluate_s'] / m['gemm_s']:.2f}x** GEMM "
        f"(goal <= 1.5x); +{extra:.0f} MiB above the {m['baseline_mib']:.0f} MiB process with its inputs | |",
        f"| large: run_protocol(top_n={TOP_K}), same inputs | {m['protocol_s']:.1f} s | "
        f"{m['protocol_s'] / m['gemm_s']:.2f}x GEMM; +{extra_protocol:.0f} MiB | |",
        f"| extrapolated to {big_q:,} x {big_g:,} x {big_d} (x{scale:.0f} the work; the blocks do not grow) | "
        f"~{m['evaluate_s'] * scale / 60:.0f} min | inputs {big_inputs:,.0f} MiB + about the same +{extra:.0f} MiB | |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs, fewer repeats")
    parser.add_argument("--threads", type=int, help="torch and faiss threads (default: torch's default)")
    parser.add_argument("--cpu-time", action="store_true", help="time process CPU time instead of wall time")
    parser.add_argument("--memory-child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import faiss

    global CLOCK
    CLOCK = time.process_time if args.cpu_time else time.perf_counter
    torch.set_num_threads(args.threads or torch.get_num_threads())
    faiss.omp_set_num_threads(torch.get_num_threads())
    flags = [f"--threads={torch.get_num_threads()}", *(["--cpu-time"] if args.cpu_time else [])]
    if args.memory_child:
        memory_child(*args.memory_child)
        return

    config = QUICK if args.quick else FULL
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}; torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"faiss {faiss.__version__} ({faiss.omp_get_max_threads()} threads); median of {config['repeats']} "
        f"{'CPU' if args.cpu_time else 'wall'} times\n"
    )
    print("| measurement | time | ratio | no cliff |\n|---|---|---|---|")
    for line in compare(config["compare"], config["repeats"]) + memory(config["memory"], flags):
        print(line, flush=True)


if __name__ == "__main__":
    main()

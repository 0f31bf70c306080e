"""`fashion-bench serve` throughput: N concurrent clients sending text searches to a server on localhost.

The server is the real CLI in its own process (uvicorn, one worker); the index is the synthetic world's catalogue
embedded by an untrained tiny CLIP (the model's quality does not change the cost of a query). For scale, the same
queries through ``Searcher.search`` in-process (no HTTP) come first, called from a worker thread as the server calls
it (on this machine, under load, the same calls from the main thread ran up to 20x slower: torch's and faiss's
OpenMP threads compete there). Each level sends a fixed number of requests
and stops; all traffic stays on 127.0.0.1.

    python tests/bench/bench_serve.py [--preset tiny] [--requests 300] [--concurrency 1 4 16] [-k 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fashion_bench  # noqa: F401  (offline defaults and the torchvision guard)
import httpx
import numpy as np
import torch

from fashion_bench.data.synthetic import generate_world
from fashion_bench.methods.base import EncoderConfig
from fashion_bench.methods.clip import ClipMethod
from fashion_bench.search.build import build
from fashion_bench.search.searcher import Searcher

QUERIES = ["red striped dress", "blue jeans", "black leather boots", "white t-shirt with short sleeves",
           "green checked shirt", "long yellow skirt", "grey hoodie", "dotted scarf in pink"]


def build_index(work: Path, preset: str) -> Path:
    world = generate_world(work / f"{preset}-seed0", preset=preset, seed=0, progress=False)
    torch.manual_seed(0)
    method = ClipMethod(EncoderConfig(model="tiny-vit-64"))
    checkpoint = work / "model.ckpt"
    torch.save({"state_dict": method.state_dict(), "hyper_parameters": dict(method.hparams)}, checkpoint)
    build(checkpoint, world / "items.jsonl", work / "index", progress=False)
    return work / "index"


def percentiles(latencies: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
    return float(p50), float(p99)


def in_process(index: Path, requests: int, k: int) -> None:
    searcher = Searcher.load(index)
    for query in QUERIES:  # warm up, as the server is before its measured requests
        searcher.search(text=query, k=k)
    latencies = []
    for i in range(requests):
        start = time.perf_counter()
        searcher.search(text=QUERIES[i % len(QUERIES)], k=k)
        latencies.append(time.perf_counter() - start)
    p50, p99 = percentiles(latencies)
    print(f"| in-process Searcher.search (no HTTP) | 1 | {requests} | {1 / statistics.mean(latencies):.0f} "
          f"| {p50:.1f} | {p99:.1f} | 0 |")


async def load(base: str, concurrency: int, requests: int, k: int) -> None:
    latencies: list[float] = []
    failures = 0
    counter = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal failures
        for i in counter:
            start = time.perf_counter()
            response = await http.post("/api/search", json={"text": QUERIES[i % len(QUERIES)], "k": k})
            latencies.append(time.perf_counter() - start)
            failures += response.status_code != 200

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        for query in QUERIES:
            await http.post("/api/search", json={"text": query, "k": k})
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    p50, p99 = percentiles(latencies)
    print(f"| HTTP POST /api/search (JSON) | {concurrency} | {requests} | {requests / elapsed:.0f} | {p50:.1f} "
          f"| {p99:.1f} | {failures} |")


def start_server(index: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-c", "import sys; from fashion_bench.cli import main; sys.exit(main(sys.argv[1:]))",
               "serve", "--index", str(index), "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            httpx.get(base + "/api/info", timeout=5)
            return server, base
        except httpx.TransportError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fashion-bench serve did not start on {base}") from None
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="synthetic world preset of the indexed catalogue")
    parser.add_argument("--requests", type=int, default=300, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("-k", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        index = build_index(Path(tmp), args.preset)
        count = len(Searcher.load(index))
        print(f"## serve: {count} indexed items (preset {args.preset}), k={args.k}, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f} at the start\n")
        print("| path | concurrent clients | requests | requests/s | p50 ms | p99 ms | non-200 |")
        print("|---|---|---|---|---|---|---|")
        with ThreadPoolExecutor(1) as worker:
            worker.submit(in_process, index, args.requests, args.k).result()
        server, base = start_server(index)
        try:
            for concurrency in args.concurrency:
                asyncio.run(load(base, concurrency, args.requests, args.k))
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)


if __name__ == "__main__":
    main()

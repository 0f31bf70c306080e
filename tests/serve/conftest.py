"""A real search index on the tiny synthetic world (an untrained tiny CLIP: the app is tested, not the model), and a
real uvicorn server on a free localhost port serving it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A method checkpoint as `fit` publishes it (state dict + constructor arguments with the class path)."""
    import torch

    from fashion_bench.methods.base import EncoderConfig
    from fashion_bench.methods.clip import ClipMethod

    torch.manual_seed(0)
    method = ClipMethod(EncoderConfig(model="tiny-vit-64"))
    path = tmp_path_factory.mktemp("run") / "model.ckpt"
    torch.save({"state_dict": method.state_dict(), "hyper_parameters": dict(method.hparams)}, path)
    return path


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory, tiny_world: Path, tiny_checkpoint: Path) -> Path:
    from fashion_bench.search.build import build

    out = tmp_path_factory.mktemp("index") / "tiny"
    build(tiny_checkpoint, tiny_world / "items.jsonl", out, progress=False)
    return out


@pytest.fixture(scope="session")
def searcher(tiny_index: Path):
    from fashion_bench.search.searcher import Searcher

    return Searcher.load(tiny_index)


@pytest.fixture
def port() -> int:
    """A free port on 127.0.0.1."""
    return free_port()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def server(searcher) -> Iterator[str]:
    """The app under uvicorn in a thread, on 127.0.0.1 (uploads limited to 1 MB); yields its base URL."""
    import uvicorn

    from fashion_bench.serve.app import create_app

    port = free_port()
    config = uvicorn.Config(create_app(searcher, max_upload_bytes=1024 * 1024), host="127.0.0.1", port=port,
                            log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=10)


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "browser: the page in headless Chromium (make test-browser)")

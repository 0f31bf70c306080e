"""`fashion-bench serve` as a user runs it: a subprocess on a free localhost port, then stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx

SERVE = [sys.executable, "-c", "import sys; from fashion_bench.cli import main; sys.exit(main(sys.argv[1:]))", "serve"]


def test_serve_answers_then_stops(tiny_index, port):
    process = subprocess.Popen([*SERVE, "--index", str(tiny_index), "--port", str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                info = httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=5)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, "fashion-bench serve did not answer within 90 s"
                time.sleep(0.2)
        assert info.json()["count"] > 0
        hits = httpx.post(f"http://127.0.0.1:{port}/api/search", json={"text": "blue jeans", "k": 3}, timeout=30)
        assert len(hits.json()["hits"]) == 3
        rebound = httpx.get(f"http://127.0.0.1:{port}/api/info", headers={"host": "attacker.example"}, timeout=5)
        assert rebound.status_code == 400 and "host 'attacker.example' is not served here" in rebound.json()["detail"]
        assert httpx.get(f"http://localhost:{port}/", timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    assert f"open http://127.0.0.1:{port}/" in output


def test_serve_refuses_a_missing_index(tmp_path):
    result = subprocess.run([*SERVE, "--index", str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("fashion-bench serve: ") and "nowhere" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_help_is_light():
    code = ("import sys; from fashion_bench.serve.cli import build_parser; build_parser(); "
            "print('torch' in sys.modules, 'fastapi' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"


def test_serve_refuses_a_busy_port_before_loading(tiny_index):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([*SERVE, "--index", str(tiny_index), "--port", str(port)], capture_output=True,
                                text=True, timeout=120)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "choose another --port" in result.stderr

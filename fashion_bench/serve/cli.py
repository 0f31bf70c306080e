"""``fashion-bench serve --index DIR``: an index's search page and JSON API, with uvicorn (localhost by default)."""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fashion-bench serve",
        description="Serve a search index (built by `fashion-bench index`) as a web page and a JSON API: text, "
        "image and composed queries with the method that built the index. Only the index's own images are served.",
    )
    parser.add_argument("--index", required=True, help="index directory written by `fashion-bench index`")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 exposes it)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device of the query encoder (default: %(default)s)")
    parser.add_argument("--max_upload_mb", type=float, default=10.0,
                        help="largest accepted image upload, in MB (default: %(default)s)")
    return parser


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def port_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on, checked before the index and its model load (seconds), or None."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            probe.bind((host, port))
    except OSError as err:
        return err.strerror or str(err)
    return None


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.max_upload_mb <= 0:
        print("fashion-bench serve: --max_upload_mb must be positive", file=sys.stderr)
        return 2
    busy = port_in_use(args.host, args.port)
    if busy:
        print(f"fashion-bench serve: cannot listen on {args.host}:{args.port} ({busy}); choose another --port",
              file=sys.stderr)
        return 2
    from fashion_bench.search.searcher import Searcher

    try:
        searcher = Searcher.load(args.index, device=args.device)
    except ValueError as err:  # SearchError, IndexDirError, ModelLoadError: each names the file and what is wrong
        print(f"fashion-bench serve: {err}", file=sys.stderr)
        return 2
    import uvicorn

    from fashion_bench.serve.app import create_app

    local = is_loopback(args.host)
    app = create_app(searcher, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                     allowed_hosts={*LOOPBACK_NAMES, args.host} if local else None)
    if not local:
        print(f"fashion-bench serve: listening on {args.host}: anyone who can reach this machine can search the index "
              "and see its images", file=sys.stderr)
    print(f"fashion-bench serve: {len(searcher)} items from {args.index}; open http://{args.host}:{args.port}/",
          file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0

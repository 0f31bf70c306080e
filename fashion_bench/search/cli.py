"""``fashion-bench index`` and ``fashion-bench search`` (docs/search.md). Arguments are parsed before anything heavy
is imported, so ``--help`` is instant; a user's mistake is one line on stderr and exit code 2 (``--verbose``: the
traceback too)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

USER_ERROR = 2


def index_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fashion-bench index",
        description="Embed a catalogue with a trained method (its own gallery encoder) into a persisted faiss index.",
    )
    parser.add_argument("--run", help="run directory of `fashion-bench fit`, or a checkpoint file (not needed with --add)")
    parser.add_argument("--catalogue", required=True, help="catalogue csv / jsonl / saved dataset, or a folder holding one")
    parser.add_argument("--out", required=True, type=Path, help="index directory to write (or to add to, with --add)")
    parser.add_argument("--add", action="store_true", help="add the catalogue's items to the index in --out")
    parser.add_argument("--image-root", help="folder the catalogue's relative image paths start from (default: its folder)")
    parser.add_argument("--columns", default="", metavar="FIELD=COLUMN,...",
                        help="the catalogue's column names, as for eval: image=img_path,text=title+description,identity=sku")
    parser.add_argument("--flat-below", type=int, default=None, help="exact (flat) index below this many items (default 100000)")
    parser.add_argument("--hnsw-below", type=int, default=None, help="HNSW up to this many items, IVF above (default 2000000)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0, help="image decoding processes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples used to train and tune an approximate index")
    parser.add_argument("--verbose", action="store_true", help="show the traceback of an error")
    return parser


def search_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fashion-bench search",
        description="Search an index with the method's own query encoder: text, image, or image + text (composed).",
    )
    parser.add_argument("--index", required=True, type=Path, help="index directory written by `fashion-bench index`")
    parser.add_argument("--text", help='query text, e.g. "red striped dress" (with an image: the change to make)')
    parser.add_argument("--image", type=Path, help="query image file")
    parser.add_argument("--reference", help="an indexed item id used as the query image")
    parser.add_argument("-k", type=int, default=20, help="number of results (default 20)")
    parser.add_argument("--category", help="only items of this category")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the query, the index provenance and the hits as JSON")
    out.add_argument("--html", type=Path, metavar="FILE", help="write a self-contained HTML page with the pictures")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--verbose", action="store_true", help="show the traceback of an error")
    return parser


def index_main(argv: list[str]) -> int:
    args = index_parser().parse_args(argv)
    return _guarded("index", args.verbose, lambda: _index(args))


def search_main(argv: list[str]) -> int:
    args = search_parser().parse_args(argv)
    return _guarded("search", args.verbose, lambda: _search(args))


def _index(args: argparse.Namespace) -> int:
    from fashion_bench.data.adapters.manifest import parse_columns
    from fashion_bench.search.build import add, build
    from fashion_bench.search.index import IndexPolicy
    from fashion_bench.search.store import INFO_FILE, IndexDirError

    sizes = {"flat_below": args.flat_below, "hnsw_below": args.hnsw_below}
    policy = IndexPolicy(**{k: v for k, v in sizes.items() if v is not None}, seed=args.seed)
    common: dict[str, Any] = dict(policy=policy, image_root=args.image_root, columns=parse_columns(args.columns) or None,
                                  device=args.device, batch_size=args.batch_size, num_workers=args.num_workers)
    if args.add:
        info = add(args.out, args.catalogue, run=args.run, **common)
    else:
        if args.run is None:
            raise IndexDirError("--run is required to build an index (a run directory or a checkpoint file)")
        if (args.out / INFO_FILE).exists():
            raise IndexDirError(f"{args.out} already holds an index; pass --add to add items, or another --out")
        info = build(args.run, args.catalogue, args.out, **common)
    depth = "".join(f" {k}={v}" for k, v in info["params"].items() if k in ("M", "efSearch", "nlist", "nprobe"))
    print(f"{args.out}: {info['count']} items, dimension {info['dimension']}, {info['kind']} index{depth}, "
          f"recall@10 vs exact {info['recall_at_10']}, method {info['method_name']} ({info['experiment']}), "
          f"{info['build_seconds']} s")
    return 0


def _search(args: argparse.Namespace) -> int:
    from fashion_bench.search.query import SearchError

    if args.image is not None and not args.image.is_file():
        raise SearchError(f"{args.image}: query image not found")
    if not (args.text and args.text.strip()) and args.image is None and args.reference is None:
        raise SearchError('empty query: give --text, --image or --reference (e.g. --text "red striped dress")')
    from fashion_bench.search.render import document, page, table
    from fashion_bench.search.searcher import Searcher

    searcher = Searcher.load(args.index, device=args.device)
    result = searcher.run(text=args.text, image=_open_image(args.image), reference=args.reference, k=args.k,
                          category=args.category)
    query = {"text": args.text, "image": str(args.image) if args.image else None, "reference": args.reference,
             "k": args.k, "category": args.category}
    if args.json:
        print(json.dumps(document(result, query, searcher.info), indent=2, ensure_ascii=False))
    elif args.html:
        from fashion_bench.atomic import write_text_atomic

        write_text_atomic(args.html, page(result, query, searcher.info))
        print(f"{args.html}: {len(result.hits)} results")
    else:
        print(table(result))
    return 0


def _open_image(path: Path | None):
    if path is None:
        return None
    from PIL import Image, UnidentifiedImageError

    from fashion_bench.search.query import SearchError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise SearchError(f"{path}: not a readable image ({err})") from None


def _guarded(command: str, verbose: bool, body: Callable[[], int]) -> int:
    """Run ``body``; a user error (bad input named in its message) becomes one line and exit code 2."""
    from fashion_bench.data.schema import DataError
    from fashion_bench.search.model import ModelLoadError
    from fashion_bench.search.query import SearchError
    from fashion_bench.search.store import IndexDirError

    try:
        return body()
    except (SearchError, ModelLoadError, IndexDirError, DataError) as err:
        if verbose:
            raise
        print(f"fashion-bench {command}: error: {err}", file=sys.stderr)
        return USER_ERROR

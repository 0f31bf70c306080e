"""``fashion-bench report``: runs -> leaderboard.md, leaderboard.csv, plots, galleries, regression check.

Exit status: 0 success; 1 a regression check failed (or, with ``--strict``, an expectation had no run);
2 the expected-results file is missing or malformed. Invalid results files never fail the report: they are
skipped with a warning.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from fashion_bench.report.collect import Collection, collect, display_path
from fashion_bench.report.gallery import GalleryPage, gallery_index, gallery_page
from fashion_bench.report.regression import ExpectedFileError, check_expected, load_expected
from fashion_bench.report.tables import build_tables, load_published, render_leaderboard, runs_csv

DEFAULT_EXPECTED = Path("configs/report/expected.yaml")
DEFAULT_GALLERY_QUERIES = 8


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fashion-bench report",
        description="Merge every results.json under the run folders into a leaderboard (markdown + CSV), "
                    "plots, retrieval galleries, and check the expected results.",
    )
    parser.add_argument("--runs", nargs="+", action="extend", type=Path, metavar="DIR",
                        help="folders searched recursively for results.json (default: runs/)")
    parser.add_argument("--out", type=Path, default=Path("docs"), metavar="DIR",
                        help="output folder for leaderboard.md/.csv, plots/ and galleries/ (default: docs/)")
    parser.add_argument("--expected", type=Path, metavar="FILE",
                        help=f"expected-results YAML (default: {DEFAULT_EXPECTED} if it exists)")
    parser.add_argument("--strict", action="store_true",
                        help="fail when an expected entry has no matching run (default: warn)")
    parser.add_argument("--no-plots", action="store_true", help="do not render PNG plots")
    parser.add_argument("--gallery-queries", type=int, default=DEFAULT_GALLERY_QUERIES, metavar="N",
                        help="queries per retrieval gallery page, 0 for no galleries "
                             f"(default: {DEFAULT_GALLERY_QUERIES})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    expected_path = args.expected or (DEFAULT_EXPECTED if DEFAULT_EXPECTED.exists() else None)
    try:
        expectations = load_expected(expected_path) if expected_path else []
    except ExpectedFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    collection = collect(args.runs or [Path("runs")])
    _warn_collection(collection)
    tables = build_tables(collection.runs, collection.superseded)
    out: Path = args.out

    plots: dict[str, list[str]] = {}
    if not args.no_plots:
        from fashion_bench.report.plots import table_plots

        for table in tables:
            for name, png in table_plots(table).items():
                _write(out / "plots" / name, png)
                plots.setdefault(table.slug, []).append(f"plots/{name}")

    pages = _write_galleries(collection, out, args.gallery_queries)
    markdown = render_leaderboard(tables, collection, load_published(), plots=plots,
                                  galleries=[(p.label, f"galleries/{p.filename}") for p in pages])
    _write(out / "leaderboard.md", markdown)
    _write(out / "leaderboard.csv", runs_csv(collection.runs, collection.superseded))
    print(f"report: {collection.found} results.json found: {len(collection.runs)} used, "
          f"{len(collection.superseded)} superseded (same seed), {len(collection.skipped)} skipped")
    print(f"report: wrote {display_path(out / 'leaderboard.md')}, leaderboard.csv, "
          f"{sum(map(len, plots.values()))} plot(s), {len(pages)} gallery page(s)")

    if not expectations:
        return 0
    result = check_expected(expectations, collection.runs)
    for line in result.failures:
        print(line, file=sys.stderr)
    for line in result.missing:
        print(f"{'error' if args.strict else 'warning'}: {line}", file=sys.stderr)
    print(result.summary())
    return 0 if result.ok(args.strict) else 1


def _warn_collection(collection: Collection) -> None:
    for root in collection.missing_roots:
        print(f"warning: runs folder {root} does not exist", file=sys.stderr)
    for skipped in collection.skipped:
        print(f"warning: skipped {display_path(skipped.path)}: {skipped.reason}", file=sys.stderr)


def _write_galleries(collection: Collection, out: Path, num_queries: int) -> list[GalleryPage]:
    if num_queries <= 0:
        return []
    pages = []
    runs = sorted(collection.runs, key=lambda r: (r.experiment, r.group_key, r.seed))
    for run in runs:
        if not run.rankings_path.is_file():
            continue
        try:
            page, warnings = gallery_page(run, num_queries)
        except OSError as err:
            print(f"warning: no gallery for {display_path(run.rankings_path)}: {err}", file=sys.stderr)
            continue
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        _write(out / "galleries" / page.filename, page.html)
        pages.append(page)
    if pages:
        _write(out / "galleries" / "index.html", gallery_index(pages))
    return pages


def _write(path: Path, content: str | bytes) -> None:
    """Write atomically: a temporary file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode("utf-8") if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

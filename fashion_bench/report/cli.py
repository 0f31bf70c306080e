"""``fashion-bench report``: runs -> leaderboard.md, leaderboard.csv, plots, galleries; claims; regression check.

Exit status: 0 success; 1 the regression check (``--check``) failed: a result outside its band or a reversed
claim (with ``--strict`` also an expectation or claim without runs); 2 the expected-results or claims file is
missing or malformed. Invalid results files never fail the report: they are skipped with a warning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from fashion_bench.atomic import atomic_open
from fashion_bench.report.claims import (
    MISSING,
    NOT_JUDGED,
    Claim,
    ClaimResult,
    check_claims,
    load_claims,
    render_claims,
)
from fashion_bench.report.collect import Collection, collect, display_path
from fashion_bench.report.gallery import GalleryPage, gallery_index, gallery_page
from fashion_bench.report.regression import Expectation, ExpectedFileError, check_expected, load_expected
from fashion_bench.report.stats import DEFAULT_RESAMPLES, Bootstrap
from fashion_bench.report.tables import Table, build_tables, load_published, render_leaderboard, runs_csv

DEFAULT_CLAIMS = Path("configs/report/claims.yaml")
DEFAULT_GALLERY_QUERIES = 8


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fashion-bench report",
        description="Merge every results.json under the run folders into a leaderboard (markdown + CSV) with "
                    "bootstrap intervals and paired comparisons, plots, retrieval galleries, and the papers' "
                    "claims; optionally check expected results.",
    )
    parser.add_argument("--runs", nargs="+", action="extend", type=Path, metavar="DIR",
                        help="folders searched recursively for results.json (default: runs/)")
    parser.add_argument("--out", type=Path, default=Path("docs"), metavar="DIR",
                        help="output folder for leaderboard.md/.csv, plots/ and galleries/ (default: docs/)")
    parser.add_argument("--check", type=Path, metavar="FILE",
                        help="run the regression check: every run inside the bands of this expected-results "
                             "YAML (e.g. configs/report/expected.yaml) and no claim reversed (default: no check)")
    parser.add_argument("--claims", type=Path, metavar="FILE",
                        help=f"claims YAML (default: {DEFAULT_CLAIMS} if it exists)")
    parser.add_argument("--strict", action="store_true",
                        help="with --check, fail when an expectation or a claim has no runs (default: warn)")
    parser.add_argument("--resamples", type=_non_negative, default=DEFAULT_RESAMPLES, metavar="N",
                        help=f"bootstrap resamples over queries, 0 for no intervals (default: {DEFAULT_RESAMPLES})")
    parser.add_argument("--bootstrap-seed", type=int, default=0, metavar="S",
                        help="seed of the bootstrap resamples (default: 0)")
    parser.add_argument("--no-plots", action="store_true", help="do not render PNG plots")
    parser.add_argument("--gallery-queries", type=int, default=DEFAULT_GALLERY_QUERIES, metavar="N",
                        help="queries per retrieval gallery page, 0 for no galleries "
                             f"(default: {DEFAULT_GALLERY_QUERIES})")
    return parser


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    claims_path = args.claims or (DEFAULT_CLAIMS if DEFAULT_CLAIMS.exists() else None)
    try:
        expectations = load_expected(args.check) if args.check else []
        claims = load_claims(claims_path) if claims_path else []
    except ExpectedFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    collection = collect(args.runs or [Path("runs")])
    _warn_collection(collection)
    bootstrap = Bootstrap(args.resamples, args.bootstrap_seed) if args.resamples else None
    tables = build_tables(collection.runs, collection.superseded, bootstrap)
    claim_results = check_claims(claims, tables)
    _write_report(args, collection, tables, claims, claim_results)
    for result in claim_results:
        print(result.line())
    if not args.check:
        return 0
    return 0 if _regression(expectations, claim_results, collection, args.strict) else 1


def _write_report(args: argparse.Namespace, collection: Collection, tables: list[Table], claims: list[Claim],
                  claim_results: list[ClaimResult]) -> None:
    out: Path = args.out
    plots = {} if args.no_plots else _write_plots(tables, out)
    diagnostics, diagnostic_links = _write_diagnostics(collection, out, not args.no_plots)
    pages = _write_galleries(collection, out, args.gallery_queries)
    if not args.no_plots:
        _prune(out / "plots", "*.png", [link for links in plots.values() for link in links] + diagnostic_links)
    if args.gallery_queries > 0:
        _prune(out / "galleries", "*.html", ["galleries/index.html"] + [f"galleries/{p.filename}" for p in pages])
    sections = ([render_claims(claim_results)] if claims else []) + ([diagnostics] if diagnostics else [])
    markdown = render_leaderboard(tables, collection, load_published(), plots=plots,
                                  galleries=[(p.label, f"galleries/{p.filename}") for p in pages], sections=sections)
    _write(out / "leaderboard.md", markdown)
    _write(out / "leaderboard.csv", runs_csv(collection.runs, collection.superseded))
    print(f"report: {collection.found} results.json found: {len(collection.runs)} used, "
          f"{len(collection.superseded)} superseded (same seed), {len(collection.skipped)} skipped")
    print(f"report: wrote {display_path(out / 'leaderboard.md')}, leaderboard.csv, "
          f"{sum(map(len, plots.values())) + len(diagnostic_links)} plot(s), {len(pages)} gallery page(s)")


def _write_plots(tables: list[Table], out: Path) -> dict[str, list[str]]:
    from fashion_bench.report.plots import table_plots

    plots: dict[str, list[str]] = {}
    for table in tables:
        for name, png in table_plots(table).items():
            _write(out / "plots" / name, png)
            plots.setdefault(table.slug, []).append(f"plots/{name}")
    return plots


def _write_diagnostics(collection: Collection, out: Path, draw: bool) -> tuple[str, list[str]]:
    """The per-query diagnostics section of the leaderboard and the plots written for it (relative to ``out``)."""
    from fashion_bench.report.diagnostics import diagnostics_plots, load_diagnostics, render_diagnostics

    found, warnings = load_diagnostics(collection.runs)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    pngs = diagnostics_plots(found) if draw else {}
    for name, png in pngs.items():
        _write(out / "plots" / name, png)
    links = {name: f"plots/{name}" for name in pngs}
    return render_diagnostics(found, links), list(links.values())


def _prune(folder: Path, pattern: str, written: list[str]) -> None:
    """Remove the files of an earlier report in a folder the report owns (``plots/``, ``galleries/``) that this
    report did not write: pages and plots of runs no longer reported would otherwise stay beside the new ones."""
    keep = {Path(link).name for link in written}
    for stale in folder.glob(pattern):
        if stale.name not in keep:
            stale.unlink()


def _regression(expectations: list[Expectation], claim_results: list[ClaimResult], collection: Collection,
                strict: bool) -> bool:
    """Print the regression check; True when it passes."""
    result = check_expected(expectations, collection.runs)
    unjudged = [r.line() for r in claim_results if r.verdict in (MISSING, NOT_JUDGED)]
    reversed_claims = [f"FAIL {r.line()}" for r in claim_results if r.verdict == "reversed"]
    for line in result.failures + reversed_claims:
        print(line, file=sys.stderr)
    for line in result.missing + unjudged:
        print(f"{'error' if strict else 'warning'}: {line}", file=sys.stderr)
    print(result.summary())
    print(f"regression: {len(claim_results)} claim(s) checked, {len(reversed_claims)} reversed, "
          f"{len(unjudged)} not judged")
    return result.ok(strict) and not reversed_claims and not (strict and unjudged)


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
    with atomic_open(path, "w" if isinstance(content, str) else "wb") as handle:
        handle.write(content)

"""Leaderboard report: results.json (+ per_query.jsonl) files -> markdown/CSV tables with bootstrap intervals and
paired comparisons, plots, retrieval galleries, claims, regression check.

Light by design: nothing here imports torch, lightning, open_clip or faiss; matplotlib and PIL load only
when plots or galleries are rendered. Entry point: ``fashion-bench report`` (:func:`main`).
"""

from fashion_bench.report.claims import Claim, ClaimResult, check_claims, load_claims
from fashion_bench.report.cli import main
from fashion_bench.report.collect import (
    SCHEMA_VERSION,
    Collection,
    InvalidResults,
    Run,
    Skipped,
    Superseded,
    collect,
    load_run,
)
from fashion_bench.report.gallery import GalleryPage, gallery_index, gallery_page
from fashion_bench.report.regression import (
    Expectation,
    ExpectedFileError,
    RegressionResult,
    check_expected,
    load_expected,
)
from fashion_bench.report.stats import Bootstrap, Comparison, Interval
from fashion_bench.report.tables import (
    PublishedSet,
    Stat,
    Table,
    build_tables,
    load_published,
    render_leaderboard,
    render_published,
    render_table,
    runs_csv,
)

__all__ = [
    "SCHEMA_VERSION", "Collection", "InvalidResults", "Run", "Skipped", "Superseded", "collect", "load_run",
    "GalleryPage", "gallery_index", "gallery_page",
    "Expectation", "ExpectedFileError", "RegressionResult", "check_expected", "load_expected",
    "PublishedSet", "Stat", "Table", "build_tables", "load_published", "render_leaderboard",
    "render_published", "render_table", "runs_csv",
    "Claim", "ClaimResult", "check_claims", "load_claims", "Bootstrap", "Comparison", "Interval",
    "main",
]

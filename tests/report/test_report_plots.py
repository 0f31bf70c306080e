"""PNG plots per table."""

from __future__ import annotations

from pathlib import Path

from fashion_bench.report.collect import collect
from fashion_bench.report.plots import table_plots
from fashion_bench.report.tables import build_tables

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_recall_curves_and_bars_per_table(runs_dir: Path) -> None:
    tables = build_tables(collect([runs_dir]).runs)
    plots = {name: png for table in tables for name, png in table_plots(table).items()}
    assert sorted(plots) == [
        "cir__synth-cir__val__synth-cir__headline.png", "cir__synth-cir__val__synth-cir__recall.png",
        "id__synth-id__val__synth-id__mAP.png", "id__synth-id__val__synth-id__recall.png",
        "t2i__synth-t2i__val__synth-t2i__mean_recall.png", "t2i__synth-t2i__val__synth-t2i__recall.png",
    ]
    assert all(png.startswith(PNG_MAGIC) and len(png) > 2000 for png in plots.values())

"""Per-query diagnostics (query_diagnostics.jsonl) in the report: distributions per category and change type."""

from __future__ import annotations

import json
from pathlib import Path

from report_fixtures import cir, results, write_run

from fashion_bench.contracts import QUERY_DIAGNOSTICS_NAME
from fashion_bench.report.cli import main
from fashion_bench.report.collect import collect
from fashion_bench.report.diagnostics import load_diagnostics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def weights_run(root: Path) -> Path:
    """A progressive test run whose colour changes lean on the text and whose length changes lean on the image."""
    run_dir = write_run(root, results("progressive__synth-cir", 0, cir(0.5, 0.2, 0.4, 0.5, 0.6), split="test")).parent
    lines = []
    for i in range(12):
        changed, category = ("colour", "length", "colour+pattern")[i % 3], ("tops", "bottoms")[i % 2]
        w_text = {"colour": 0.7, "length": 0.3, "colour+pattern": 0.6}[changed] + 0.01 * i
        lines.append({"query_id": f"q{i}", "category": category, "changed": changed,
                      "values": {"w_image": 1 - w_text, "w_text": w_text}})
    (run_dir / QUERY_DIAGNOSTICS_NAME).write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return run_dir


def test_report_plots_the_distributions_and_links_them(tmp_path: Path) -> None:
    runs, out = tmp_path / "runs", tmp_path / "docs"
    weights_run(runs)
    write_run(runs, results("clip__synth-cir", 0, cir(0.4, 0.1, 0.3, 0.4, 0.5), split="test"))  # no diagnostics
    assert main(["--runs", str(runs), "--out", str(out), "--resamples", "0", "--gallery-queries", "0"]) == 0
    plots = sorted((out / "plots").glob("*diagnostics.png"))
    assert [p.name for p in plots] == ["progressive__synth-cir__20240101-000000_seed0__diagnostics.png"]
    assert plots[0].read_bytes().startswith(PNG_MAGIC) and plots[0].stat().st_size > 5000
    leaderboard = (out / "leaderboard.md").read_text()
    assert "## Per-query diagnostics" in leaderboard and f"([plot](plots/{plots[0].name}))" in leaderboard
    assert "| changed: colour | 4 | 0.255 | 0.745 |" in leaderboard  # w_text 0.70 + 0.01 x (0, 3, 6, 9)
    assert "| category: tops | 6 |" in leaderboard and "clip__synth-cir (test" not in leaderboard


def test_groups_without_change_types_and_unreadable_files(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run_dir = weights_run(runs)
    rows = [json.loads(line) for line in (run_dir / QUERY_DIAGNOSTICS_NAME).read_text().splitlines()]
    for row in rows:
        del row["changed"]
    (run_dir / QUERY_DIAGNOSTICS_NAME).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    broken = write_run(runs, results("progressive__synth-cir", 1, cir(0.5, 0.2, 0.4, 0.5, 0.6), split="test")).parent
    (broken / QUERY_DIAGNOSTICS_NAME).write_text('{"query_id": "q0", "category": "tops", "values": {"w_text": "high"}}\n')
    found, warnings = load_diagnostics(collect([runs]).runs)
    assert [d.run.seed for d in found] == [0] and found[0].groupings() == ["category"]
    assert found[0].groups("w_text", "category").keys() == {"bottoms", "tops"}
    assert len(warnings) == 1 and ":1 (query 'q0'): field 'values' must map names to numbers" in warnings[0]

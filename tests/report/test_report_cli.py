"""`fashion-bench report` end to end, and the light-import guarantee."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from fashion_bench.report.cli import main


def _add_rankings(runs_dir: Path, tmp_path: Path) -> None:
    image = tmp_path / "img.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    run = next((runs_dir / "clip4cir__synth-cir").iterdir())
    line = {"query_id": "q", "query_text": ["is red"], "query_image": str(image),
            "results": [{"item_id": f"i{r}", "image": str(image), "score": 0.9, "positive": r == 0} for r in range(5)]}
    (run / "rankings.jsonl").write_text(json.dumps(line) + "\n")


def test_report_writes_everything_and_names_skipped_files(runs_dir: Path, tmp_path: Path, capsys) -> None:
    _add_rankings(runs_dir, tmp_path)
    out = tmp_path / "docs"
    assert main(["--runs", str(runs_dir), "--out", str(out), "--check", str(_expected(tmp_path, []))]) == 0
    stdout, stderr = capsys.readouterr()
    assert "report: 9 results.json found: 5 used, 1 superseded (same seed), 3 skipped" in stdout
    for name, reason in [("corrupt", "corrupt JSON"), ("partial", "missing fields: seed, metrics"),
                         ("future", "schema_version 2 is not supported")]:
        assert re.search(rf"warning: skipped \S*/{name}/results.json: {reason}", stderr), stderr
    markdown = (out / "leaderboard.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(links) == 6 and all((out / link).is_file() for link in links)
    assert "## Published numbers" in markdown and "## Skipped results files" in markdown
    assert "(galleries/clip4cir__synth-cir__20240101-000000_seed0.html)" in markdown
    assert (out / "galleries" / "index.html").is_file()
    assert len((out / "leaderboard.csv").read_text().splitlines()) == 7
    assert not list(out.rglob("*.tmp"))


def test_pages_and_plots_of_runs_no_longer_reported_are_removed(runs_dir: Path, tmp_path: Path) -> None:
    _add_rankings(runs_dir, tmp_path)
    out = tmp_path / "docs"
    stale = [out / "galleries" / "old__20230101-000000_seed0.html", out / "plots" / "old__diagnostics.png"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("from an earlier report")
    (out / "notes.md").write_text("not the report's")
    assert main(["--runs", str(runs_dir), "--out", str(out)]) == 0
    assert not any(path.exists() for path in stale)
    assert (out / "notes.md").is_file()
    assert (out / "galleries" / "clip4cir__synth-cir__20240101-000000_seed0.html").is_file()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (out / "leaderboard.md").read_text())
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == sorted(Path(link).name for link in links)


def test_no_plots_no_galleries(runs_dir: Path, tmp_path: Path) -> None:
    _add_rankings(runs_dir, tmp_path)
    out = tmp_path / "docs"
    assert main(["--runs", str(runs_dir), "--out", str(out), "--no-plots", "--gallery-queries", "0"]) == 0
    assert not (out / "plots").exists() and not (out / "galleries").exists()
    assert "![" not in (out / "leaderboard.md").read_text()


def _expected(tmp_path: Path, entries: list[dict]) -> Path:
    path = tmp_path / "expected.yaml"
    path.write_text(json.dumps(entries))  # JSON is YAML
    return path


@pytest.mark.parametrize(("entries", "flags", "code", "message"), [
    ([{"experiment": "clip__synth-t2i", "split": "val", "metric": "mean_recall", "value": 0.54, "tol": 0.01}],
     [], 0, "regression: 1 result(s) checked, 1 passed, 0 failed"),
    ([{"experiment": "clip__synth-t2i", "split": "val", "metric": "mean_recall", "min": 0.6}],
     [], 1, "FAIL clip__synth-t2i [val] mean_recall = 0.5433, outside [0.6000, inf]"),
    ([{"experiment": "enclip__synth-t2i", "split": "val", "metric": "R@1", "min": 0.6}],
     [], 0, "warning: no run for expected enclip__synth-t2i [val] R@1"),
    ([{"experiment": "enclip__synth-t2i", "split": "val", "metric": "R@1", "min": 0.6}],
     ["--strict"], 1, "error: no run for expected enclip__synth-t2i [val] R@1"),
    ([{"experiment": "clip__synth-t2i", "split": "val", "metric": "R@1", "tol": 0.6}],
     [], 2, "entry 0: give 'value' with 'tol'"),
])
def test_regression_exit_codes(runs_dir: Path, tmp_path: Path, capsys, entries, flags, code, message) -> None:
    argv = ["--runs", str(runs_dir), "--out", str(tmp_path / "docs"), "--no-plots",
            "--check", str(_expected(tmp_path, entries)), *flags]
    assert main(argv) == code
    captured = capsys.readouterr()
    assert message in captured.out + captured.err


def test_defaults_are_relative_to_the_working_directory(runs_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # runs/ is here
    (tmp_path / "configs" / "report").mkdir(parents=True)
    (tmp_path / "configs" / "report" / "expected.yaml").write_text("- {experiment: x, split: val, metric: R@1}\n")
    assert main(["--no-plots"]) == 0  # the regression check runs only when asked
    assert (tmp_path / "docs" / "leaderboard.md").is_file()
    assert "regression" not in capsys.readouterr().out
    assert main(["--no-plots", "--check", "configs/report/expected.yaml"]) == 2
    (tmp_path / "configs" / "report" / "claims.yaml").write_text("- {better: a, worse: a}\n")  # read by default
    assert main(["--no-plots"]) == 2
    assert "configs/report/claims.yaml: claim 0: 'split' must be a non-empty string" in capsys.readouterr().err


def test_no_runs_at_all(tmp_path: Path, capsys) -> None:
    assert main(["--runs", str(tmp_path / "none"), "--out", str(tmp_path / "docs")]) == 0
    assert "warning: runs folder" in capsys.readouterr().err
    assert "No usable results.json was found." in (tmp_path / "docs" / "leaderboard.md").read_text()


def test_import_is_light() -> None:
    code = ("import sys, fashion_bench.report, fashion_bench.report.plots\n"
            "heavy = ('torch', 'lightning', 'open_clip', 'faiss', 'matplotlib', 'PIL')\n"
            "print([m for m in heavy if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"

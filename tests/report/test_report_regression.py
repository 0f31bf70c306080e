"""The expected-results check: file format, pass / fail / missing messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from fashion_bench.report.collect import collect
from fashion_bench.report.regression import ExpectedFileError, check_expected, load_expected, parse_expected

REPO = Path(__file__).resolve().parents[2]


def _check(runs_dir: Path, entries: list[dict]):
    return check_expected(parse_expected(entries, "expected.yaml"), collect([runs_dir]).runs)


def test_every_run_inside_its_band_passes(runs_dir: Path) -> None:
    result = _check(runs_dir, [
        {"experiment": "clip4cir__synth-cir", "split": "val", "metric": "headline", "value": 0.56, "tol": 0.01},
        {"experiment": "clip4cir__synth-cir", "split": "val", "metric": "R@10", "subset": "dress", "min": 0.45},
        {"experiment": "reid-baseline__synth-id", "split": "val", "metric": "mAP", "min": 0.3, "max": 0.5},
    ])
    assert (result.checked, result.passed, result.failures, result.missing) == (5, 5, [], [])
    assert result.ok(strict=True)
    assert result.summary() == ("regression: 5 result(s) checked, 5 passed, 0 failed, "
                                "0 expectation(s) without a run")


def test_results_outside_the_band_are_named(runs_dir: Path) -> None:
    result = _check(runs_dir, [
        {"experiment": "clip4cir__synth-cir", "split": "val", "metric": "headline", "value": 0.55, "tol": 0.005},
        {"experiment": "clip__synth-cir", "split": "val", "metric": "R@1", "max": 0.1},
        {"experiment": "clip__synth-cir", "split": "val", "metric": "mAP", "min": 0.1},
    ])
    runs_dir = runs_dir.resolve()
    assert result.failures == [
        "FAIL clip4cir__synth-cir [val] headline = 0.5700, outside 0.5500 ± 0.0050 "
        f"({runs_dir / 'clip4cir__synth-cir' / '20240101-000000_seed1'})",
        f"FAIL clip__synth-cir [val] R@1 = 0.1234, outside [-inf, 0.1000] "
        f"({runs_dir / 'clip__synth-cir' / '20240102-090000_seed0'})",
        f"FAIL clip__synth-cir [val] mAP: not reported by {runs_dir / 'clip__synth-cir' / '20240102-090000_seed0'}",
    ]
    assert result.passed == 1 and not result.ok()


def test_expectation_without_run_warns_and_fails_only_when_strict(runs_dir: Path) -> None:
    result = _check(runs_dir, [
        {"experiment": "clip4cir__synth-cir", "split": "test", "metric": "R@10", "value": 0.5, "tol": 0.1}])
    assert result.missing == ["no run for expected clip4cir__synth-cir [test] R@10"]
    assert result.ok() and not result.ok(strict=True)


@pytest.mark.parametrize(("entry", "reason"), [
    ({"experiment": "e", "split": "val", "metric": "R@1", "value": 0.5, "tolerance": 0.1}, "unknown key(s) tolerance"),
    ({"experiment": "e", "split": "val", "metric": "R@1", "value": 0.5}, "give 'value' with 'tol'"),
    ({"experiment": "e", "split": "val", "metric": "R@1", "value": 0.5, "tol": 0.1, "min": 0.2}, "not a mix"),
    ({"experiment": "e", "split": "val", "metric": "R@1"}, "no band"),
    ({"experiment": "e", "split": "train", "metric": "R@1", "min": 0.1}, "split 'train' is not one of"),
    ({"experiment": "e", "split": "val", "metric": "R@1", "min": 0.6, "max": 0.5}, "'min' is larger than 'max'"),
    ({"experiment": "e", "split": "val", "metric": "R@1", "min": "high"}, "'min' must be a finite number"),
    ({"split": "val", "metric": "R@1", "min": 0.1}, "'experiment' must be a non-empty string"),
    ({"experiment": "e", "split": "val", "metric": "R@1", "value": 0.5, "tol": -1}, "'tol' must be >= 0"),
])
def test_malformed_entries_are_named(entry: dict, reason: str) -> None:
    with pytest.raises(ExpectedFileError, match=r"^expected.yaml: entry 1: .*") as info:
        parse_expected([{"experiment": "ok", "split": "val", "metric": "R@1", "min": 0.0}, entry], "expected.yaml")
    assert reason in str(info.value)


def test_file_level_errors(tmp_path: Path) -> None:
    path = tmp_path / "expected.yaml"
    path.write_text("")
    assert load_expected(path) == []
    path.write_text("experiment: e\n")
    with pytest.raises(ExpectedFileError, match="expected a YAML list of entries, got dict"):
        load_expected(path)
    path.write_text("- [unclosed\n")
    with pytest.raises(ExpectedFileError, match="invalid YAML"):
        load_expected(path)
    with pytest.raises(ExpectedFileError, match="cannot read"):
        load_expected(tmp_path / "missing.yaml")


def test_shipped_expected_file_parses_and_names_what_the_demo_runs() -> None:
    from fashion_bench.demo import demo_steps

    entries = load_expected(REPO / "configs" / "report" / "expected.yaml")
    assert entries
    produced = {(step.experiment, step.split) for step in demo_steps()}
    assert {(e.experiment, e.split) for e in entries} <= produced

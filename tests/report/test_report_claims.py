"""Claims as data: verdicts from paired intervals, and the regression check failing on a reversed claim."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from report_fixtures import ID_SUBSETS_PROTOCOL, per_query, ranks, write_scored_run

from fashion_bench.report.claims import check_claims, load_claims, parse_claims
from fashion_bench.report.cli import main
from fashion_bench.report.collect import collect
from fashion_bench.report.regression import ExpectedFileError
from fashion_bench.report.stats import Bootstrap
from fashion_bench.report.tables import build_tables

REPO = Path(__file__).resolve().parents[2]
BASE = ranks(10, worst=30)
IMPROVED = np.where(BASE > 4, BASE - 4, BASE)


def _runs(root: Path, multiprompt: np.ndarray, baseline: np.ndarray) -> None:
    for name, first in (("multiprompt__synth-id", multiprompt), ("reid-baseline__synth-id", baseline)):
        write_scored_run(root, name, 0, per_query(first, subsets=("intra", "cross")), protocol=ID_SUBSETS_PROTOCOL,
                         split="test")


def _claim(metric: str = "mAP", **extra) -> dict:
    return {"better": "multiprompt__synth-id", "worse": "reid-baseline__synth-id", "split": "test",
            "metric": metric, "subset": "cross", "source": "multi-prompt FashionCLIP", **extra}


def _verdicts(root: Path, claims: list[dict]) -> list[str]:
    tables = build_tables(collect([root]).runs, bootstrap=Bootstrap(300, 0))
    return [r.verdict for r in check_claims(parse_claims(claims, "claims.yaml"), tables)]


def test_verdicts(tmp_path: Path) -> None:
    _runs(tmp_path / "holds", IMPROVED, BASE)
    _runs(tmp_path / "reversed", BASE, IMPROVED)
    _runs(tmp_path / "tie", BASE, BASE)
    claims = [_claim(), _claim("rank1")]
    assert _verdicts(tmp_path / "holds", claims) == ["holds", "holds"]
    assert _verdicts(tmp_path / "reversed", claims) == ["reversed", "reversed"]
    assert _verdicts(tmp_path / "tie", claims) == ["not significant", "not significant"]
    assert _verdicts(tmp_path / "holds", [_claim(split="val"), _claim(subset="nowhere"),
                                          dict(_claim(), better="enclip__synth-id")]) == [
        "missing runs", "not judged", "missing runs"]


def test_claims_without_per_query_data_or_with_several_configurations_are_not_judged(tmp_path: Path) -> None:
    _runs(tmp_path, IMPROVED, BASE)
    write_scored_run(tmp_path, "reid-baseline__synth-id", 0, per_query(BASE, subsets=("intra", "cross")),
                     protocol=ID_SUBSETS_PROTOCOL, split="test", config_hash="f" * 64)
    tables = build_tables(collect([tmp_path]).runs, bootstrap=Bootstrap(100, 0))
    (result,) = check_claims(parse_claims([_claim()], "claims.yaml"), tables)
    assert (result.verdict, result.reason) == ("not judged", "an experiment has several configurations (config_hash)")
    tables = build_tables(collect([tmp_path]).runs, bootstrap=None)
    (result,) = check_claims(parse_claims([dict(_claim(), worse="multiprompt__synth-id",
                                                better="reid-baseline__synth-id")], "c"), tables)
    assert result.verdict == "not judged"


def _cli(root: Path, tmp_path: Path, *flags: str) -> int:
    claims = tmp_path / "claims.yaml"
    claims.write_text(json.dumps([_claim(), _claim("rank1")]))
    expected = tmp_path / "expected.yaml"
    expected.write_text("[]")
    return main(["--runs", str(root), "--out", str(tmp_path / "docs"), "--no-plots", "--gallery-queries", "0",
                 "--claims", str(claims), "--resamples", "300", *flags, *(["--check", str(expected)] if flags else [])])


def test_the_regression_check_fails_on_a_reversed_pair(tmp_path: Path, capsys) -> None:
    _runs(tmp_path / "reversed", BASE, IMPROVED)
    assert _cli(tmp_path / "reversed", tmp_path) == 0  # stated, but not checked unless asked
    out, err = capsys.readouterr()
    assert "claim multiprompt__synth-id > reid-baseline__synth-id [test] cross/mAP: reversed (difference -" in out
    markdown = (tmp_path / "docs" / "leaderboard.md").read_text()
    assert "## Claims (from the papers, checked on our runs)" in markdown
    assert "| multiprompt__synth-id > reid-baseline__synth-id | test | cross/mAP | -" in markdown
    assert _cli(tmp_path / "reversed", tmp_path, "--strict") == 1
    out, err = capsys.readouterr()
    assert "FAIL claim multiprompt__synth-id > reid-baseline__synth-id [test] cross/rank1: reversed" in err
    assert "regression: 2 claim(s) checked, 2 reversed, 0 not judged" in out
    _runs(tmp_path / "holds", IMPROVED, BASE)
    assert _cli(tmp_path / "holds", tmp_path, "--strict") == 0


def test_claims_without_runs_warn_and_fail_only_when_strict(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    claims_args = ["--runs", str(tmp_path / "empty"), "--out", str(tmp_path / "docs"), "--no-plots"]
    (tmp_path / "claims.yaml").write_text(json.dumps([_claim()]))
    (tmp_path / "expected.yaml").write_text("[]")
    check = ["--claims", str(tmp_path / "claims.yaml"), "--check", str(tmp_path / "expected.yaml")]
    assert main(claims_args + check) == 0
    assert "warning: claim multiprompt__synth-id > reid-baseline__synth-id [test] cross/mAP: missing runs" in (
        capsys.readouterr().err)
    assert main(claims_args + check + ["--strict"]) == 1


@pytest.mark.parametrize(("entry", "reason"), [
    ("not a mapping", "not a mapping"),
    (dict(_claim(), margin=0.1), "unknown key(s) margin"),
    ({k: v for k, v in _claim().items() if k != "source"}, "'source' must be a non-empty string"),
    (dict(_claim(), split="train"), "split 'train' is not one of val, test"),
    (dict(_claim(), worse="multiprompt__synth-id"), "'better' and 'worse' name the same experiment"),
    (dict(_claim(), subset=3), "'subset' must be a non-empty string"),
])
def test_malformed_claims_are_named(entry, reason: str) -> None:
    with pytest.raises(ExpectedFileError) as info:
        parse_claims([_claim(), entry], "claims.yaml")
    assert str(info.value).startswith("claims.yaml: claim 1: ") and reason in str(info.value)


def test_claims_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "claims.yaml"
    path.write_text("better: x\n")
    with pytest.raises(ExpectedFileError, match="expected a YAML list of claims, got dict"):
        load_claims(path)
    path.write_text("- [unclosed\n")
    with pytest.raises(ExpectedFileError, match="invalid YAML"):
        load_claims(path)
    with pytest.raises(ExpectedFileError, match="cannot read"):
        load_claims(tmp_path / "missing.yaml")


def test_shipped_claims_parse_and_name_what_the_demo_runs() -> None:
    from fashion_bench.demo import demo_steps

    claims = load_claims(REPO / "configs" / "report" / "claims.yaml")
    produced = {(step.experiment, step.split) for step in demo_steps()}
    assert claims and all({(c.better, c.split), (c.worse, c.split)} <= produced for c in claims)


def _seeded_runs(root: Path, pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for seed, (multiprompt, baseline) in enumerate(pairs):
        for name, first in (("multiprompt__synth-id", multiprompt), ("reid-baseline__synth-id", baseline)):
            write_scored_run(root, name, seed, per_query(first, subsets=("intra", "cross")),
                             protocol=ID_SUBSETS_PROTOCOL, split="test")


def _results(root: Path, claims: list[dict]):
    tables = build_tables(collect([root]).runs, bootstrap=Bootstrap(300, 0))
    return check_claims(parse_claims(claims, "claims.yaml"), tables)


def test_with_several_seeds_a_claim_holds_only_when_it_holds_in_every_seed(tmp_path: Path) -> None:
    _seeded_runs(tmp_path / "every", [(IMPROVED, BASE)] * 3)
    (result,) = _results(tmp_path / "every", [_claim()])
    assert result.verdict == "holds" and result.seeds_summary == "3/3 seeds hold"
    assert [seed for seed, _ in result.per_seed] == [0, 1, 2]
    assert "seed 2 +" in result.line() and "holds" in result.line()
    # two seeds with a large gain carry the pooled mean, the third seed shows none: not every seed holds
    _seeded_runs(tmp_path / "two", [(IMPROVED, BASE), (IMPROVED, BASE), (BASE, BASE)])
    (result,) = _results(tmp_path / "two", [_claim()])
    assert result.comparison.verdict == "holds"
    assert (result.verdict, result.seeds_summary) == ("not significant", "2/3 seeds hold")
    # one seed reversing the claim reverses it
    _seeded_runs(tmp_path / "one-reversed", [(IMPROVED, BASE), (IMPROVED, BASE), (BASE, IMPROVED)])
    (result,) = _results(tmp_path / "one-reversed", [_claim()])
    assert result.verdict == "reversed"


def test_seeds_are_paired_with_the_same_seed_only(tmp_path: Path) -> None:
    _seeded_runs(tmp_path, [(IMPROVED, BASE), (IMPROVED, BASE)])
    write_scored_run(tmp_path, "multiprompt__synth-id", 7, per_query(IMPROVED, subsets=("intra", "cross")),
                     protocol=ID_SUBSETS_PROTOCOL, split="test")
    (result,) = _results(tmp_path, [_claim()])
    assert [seed for seed, _ in result.per_seed] == [0, 1] and result.verdict == "holds"

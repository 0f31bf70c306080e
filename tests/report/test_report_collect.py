"""Finding and validating results.json files; one run per seed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from report_fixtures import CIR_PROTOCOL, results, write_run

from fashion_bench.report.collect import InvalidResults, collect, load_run

CIR = {"headline": 0.5, "R@1": 0.1, "R@5": 0.3, "R@10": 0.4, "R@50": 0.6}


def test_collect_counts_used_superseded_and_skipped(runs_dir: Path) -> None:
    collection = collect([runs_dir])
    assert collection.found == 9
    assert len(collection.runs) == 5
    assert len(collection.superseded) == 1
    assert {s.path.parent.name: s.reason for s in collection.skipped} == {
        "corrupt": "corrupt JSON (line 1, column 37: Expecting value)",
        "partial": "missing fields: seed, metrics",
        "future": "schema_version 2 is not supported (this report reads 1)",
    }


def test_same_seed_keeps_the_latest_run(runs_dir: Path) -> None:
    collection = collect([runs_dir])
    (item,) = collection.superseded
    assert item.run.run_name == "20240101-090000_seed0"
    assert item.kept.run_name == "20240102-090000_seed0"
    kept = [r for r in collection.runs if r.experiment == "clip__synth-cir"]
    assert [r.metrics["headline"] for r in kept] == [0.40]


def test_overlapping_roots_missing_root_and_file_root(runs_dir: Path, tmp_path: Path) -> None:
    one = next((runs_dir / "clip__synth-t2i").rglob("results.json"))
    collection = collect([runs_dir, runs_dir / "clip4cir__synth-cir", one, tmp_path / "nowhere"])
    assert collection.found == 9
    assert collection.missing_roots == [tmp_path / "nowhere"]


@pytest.mark.parametrize(("change", "reason"), [
    (lambda d: d["metrics"].update({"R@1": 57.3}), "metrics.R@1 = 57.3 is not a fraction in [0, 1]"),
    (lambda d: d["metrics"].update({"R@1": math.nan}), "metrics.R@1 = nan is not a fraction in [0, 1]"),
    (lambda d: d["metrics"].update({"R@1": "0.1"}), "metrics.R@1 = '0.1' is not a fraction in [0, 1]"),
    (lambda d: d.update(metrics={}), "field 'metrics' is empty"),
    (lambda d: d.update(task="search"), "task 'search' is not one of t2i, id, cir"),
    (lambda d: d.update(split="train"), "split 'train' is not one of val, test"),
    (lambda d: d.update(seed="0"), "seed '0' is not an integer"),
    (lambda d: d.update(started_at="yesterday"), "started_at 'yesterday' is not an ISO timestamp"),
    (lambda d: d.update(protocol={**CIR_PROTOCOL, "ks": "1,5"}), "protocol.ks must be a list of ints"),
    (lambda d: d["protocol"].pop("primary_metric"), "protocol is missing: primary_metric"),
    (lambda d: d.update(per_subset={"dress": {"R@10": -0.1}}), "per_subset.dress.R@10 = -0.1 is not a fraction"),
    (lambda d: d.pop("experiment"), "missing field: experiment"),
])
def test_invalid_fields_give_the_reason(tmp_path: Path, change, reason: str) -> None:
    data = results("clip__synth-cir", 0, dict(CIR), protocol=dict(CIR_PROTOCOL))
    change(data)
    path = write_run(tmp_path, data, run="r")
    with pytest.raises(InvalidResults, match="^" + reason.replace("[", r"\[").replace("]", r"\]")):
        load_run(path)


def test_non_object_and_unreadable_files(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(InvalidResults, match="top level is a JSON list"):
        load_run(path)
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(InvalidResults, match="not UTF-8"):
        load_run(path)


def test_optional_fields_may_be_absent(tmp_path: Path) -> None:
    data = results("clip__synth-cir", 0, dict(CIR))
    for name in ("per_subset", "encoder", "hardware", "versions", "git_sha", "num_queries"):
        del data[name]
    run = load_run(write_run(tmp_path, data, run="r"))
    assert run.per_subset == {} and run.group_key == ("cir", "synth-cir", "val", "synth-cir")

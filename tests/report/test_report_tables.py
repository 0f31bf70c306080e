"""Aggregation over seeds, the golden markdown table, the CSV and the published section."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from report_fixtures import results, write_run

from fashion_bench.report.collect import collect
from fashion_bench.report.tables import (
    Stat,
    build_tables,
    load_published,
    metric_order,
    render_leaderboard,
    render_table,
    runs_csv,
)

GOLDEN_CIR = """\
### synth-cir · val · composed retrieval (`cir`, protocol `synth-cir`)

| experiment | headline | R@1 | R@5 | R@10 | R@50 | runs |
| :--- | ---: | ---: | ---: | ---: | ---: | ---: |
| clip4cir__synth-cir | 56.00 ± 1.41 | 21.00 ± 1.41 | 42.00 ± 2.83 | 51.00 ± 1.41 | 61.00 ± 1.41 | 2 |
| clip__synth-cir | 40.00 | 12.34 | 30.00 | 35.00 | 45.00 | 1 |

Per subset:

| experiment | subset | R@10 | R@50 | runs |
| :--- | :--- | ---: | ---: | ---: |
| clip4cir__synth-cir | dress | 46.00 ± 1.41 | 56.00 ± 1.41 | 2 |
| clip4cir__synth-cir | shirt | 56.00 ± 1.41 | 66.00 ± 1.41 | 2 |

Percent; mean ± sample standard deviation over seeds (one run per seed); rows ranked by headline. \
headline = mean of R@10, R@50. Primary metric (checkpointing): headline.

- clip__synth-cir, seed 0: several runs; kept the latest (20240102-090000_seed0), ignored 20240101-090000_seed0.

![x](plots/x.png)
"""


def _tables(runs_dir: Path):
    collection = collect([runs_dir])
    return collection, build_tables(collection.runs, collection.superseded)


def test_golden_cir_table(runs_dir: Path) -> None:
    _, tables = _tables(runs_dir)
    assert [t.key for t in tables] == [("cir", "synth-cir", "val", "synth-cir"), ("id", "synth-id", "val", "synth-id"),
                                       ("t2i", "synth-t2i", "val", "synth-t2i")]
    assert render_table(tables[0], plots=["plots/x.png"]) == GOLDEN_CIR


def test_primary_metric_first_without_headline(runs_dir: Path) -> None:
    _, tables = _tables(runs_dir)
    assert list(tables[1].columns) == ["mAP", "R@1", "R@5", "rank1"]
    assert list(tables[2].columns)[:2] == ["mean_recall", "t2i/R@1"]
    assert [r.subset for r in tables[1].subset_rows] == ["cross", "intra"]


def test_metric_missing_in_some_seeds_is_marked(tmp_path: Path) -> None:
    write_run(tmp_path, results("clip__synth-cir", 0, {"headline": 0.5, "R@1": 0.2}))
    write_run(tmp_path, results("clip__synth-cir", 1, {"headline": 0.6}))
    collection = collect([tmp_path])
    text = render_table(build_tables(collection.runs)[0])
    assert "| clip__synth-cir | 55.00 ± 7.07 | 20.00 (n=1) | 2 |" in text


def test_val_and_test_are_separate_tables(tmp_path: Path) -> None:
    write_run(tmp_path, results("clip__synth-cir", 0, {"headline": 0.5}))
    write_run(tmp_path, results("clip__synth-cir", 0, {"headline": 0.4}, split="test"), run="test_seed0")
    collection = collect([tmp_path])
    assert not collection.superseded
    assert [t.split for t in build_tables(collection.runs)] == ["test", "val"]


def test_stat_and_metric_order() -> None:
    assert Stat.of([0.5]).percent() == "50.00"
    assert Stat.of([0.5, 0.6, 0.7]).percent() == "60.00 ± 10.00"
    names = ["rank1", "mAP", "i2t/R@1", "t2i/R@10", "t2i/R@5", "Rsubset@2", "R@50", "R@5", "headline", "zz"]
    assert sorted(names, key=metric_order) == ["headline", "R@5", "R@50", "Rsubset@2", "t2i/R@5", "t2i/R@10",
                                               "i2t/R@1", "mAP", "rank1", "zz"]


def test_csv_has_every_run(runs_dir: Path) -> None:
    collection, _ = _tables(runs_dir)
    rows = list(csv.DictReader(io.StringIO(runs_csv(collection.runs, collection.superseded))))
    assert [(r["experiment"], r["seed"], r["used"]) for r in rows] == [
        ("clip4cir__synth-cir", "0", "true"), ("clip4cir__synth-cir", "1", "true"),
        ("clip__synth-cir", "0", "false"), ("clip__synth-cir", "0", "true"),
        ("reid-baseline__synth-id", "3", "true"), ("clip__synth-t2i", "0", "true"),
    ]
    first = rows[0]
    assert (first["run"], first["R@1"], first["R@50"], first["per_subset.shirt.R@50"], first["mAP"]) == (
        "20240101-000000_seed0", "0.2", "0.6", "0.65", "")
    assert (first["encoder"], first["pretrained"], first["num_queries"], first["git_sha"]) == (
        "tiny-vit-64", "/ckpt/tiny.pt", "100", "abc123")
    assert rows[4]["per_subset.cross.mAP"] == "0.31"
    assert rows[5]["mean_recall"] == "0.5433"


def test_published_numbers_load_with_sources() -> None:
    published = load_published()
    assert set(published.sources) == {e.source for e in published.entries}
    by = {(e.method, e.dataset, e.setting.split(",")[0]): e.metrics for e in published.entries}
    assert by[("CLIP4Cir", "fashioniq", "RN50x4")]["toptee/R@50"] == 70.98
    assert by[("CLIP4Cir", "cirr", "RN50x4")] == {"headline": 75.10, "R@1": 44.82, "R@5": 77.04, "R@10": 86.65,
                                                  "R@50": 97.90}
    assert by[("PL4CIR", "shoes", "CLIP-B")] == {"R@1": 19.53, "R@10": 55.65, "R@50": 80.58}
    assert by[("Multi-prompt FashionCLIP", "wab", "gain over traditional models (percentage points); absolute "
               "numbers not public")]["cross/mAP"] == 8.4
    assert {e.method: e.metrics["t2i/R@1"] for e in published.entries if e.dataset == "marqo-7"} == {
        "Marqo-FashionSigLIP": 12.1, "Marqo-FashionCLIP": 9.4, "FashionCLIP 2.0": 7.7}


def test_leaderboard_keeps_published_numbers_apart(tmp_path: Path) -> None:
    write_run(tmp_path, results("clip4cir__fashioniq", 0, {"headline": 0.3}))
    collection = collect([tmp_path])
    text = render_leaderboard(build_tables(collection.runs), collection, load_published())
    ours, published = text.split("## Published numbers (from the papers, not our runs)")
    assert "55.36" not in ours and "| clip4cir__fashioniq | 30.00 | 1 |" in ours
    assert "[published numbers](#published-cir-fashioniq)" in ours
    assert '<a id="published-cir-fashioniq"></a>' in published and "55.36" in published
    assert "| Multi-prompt FashionCLIP |" in published and "+8.4 pp" in published

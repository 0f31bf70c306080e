"""Bootstrap intervals over queries, paired comparisons, and rows without per-query data."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from report_fixtures import ID_PROTOCOL, per_query, ranks, write_scored_run

from fashion_bench.report.collect import collect
from fashion_bench.report.plots import table_plots
from fashion_bench.report.stats import Bootstrap, RowSamples, _counts, _weights
from fashion_bench.report.tables import build_tables, render_table
from fashion_bench.retrieval.per_query import PerQuery, metric_values
from fashion_bench.retrieval.protocols import Protocol

BOOT = Bootstrap(resamples=400, seed=0)


def _table(root: Path, bootstrap: Bootstrap = BOOT):
    (table,) = build_tables(collect([root]).runs, bootstrap=bootstrap)
    return table


def _row(table, label: str):
    return next(row for row in table.rows if row.label == label)


def test_counts_resample_queries_with_replacement_and_weights_match_a_naive_bootstrap() -> None:
    pq = per_query(ranks(0, n=50))
    protocol = Protocol.from_dict(ID_PROTOCOL)
    (counts,) = list(_counts(50, Bootstrap(30, 7), 0, chunk=100))
    assert counts.shape == (30, 50) and (counts.sum(1) == 50).all()
    weighted = metric_values(pq, protocol, counts)["mAP"]
    for b in range(30):
        drawn = np.repeat(np.arange(50), counts[b].astype(int))
        valid = pq.ranking.valid[drawn]
        assert weighted[b] == pytest.approx(pq.ranking.ap[drawn][valid].mean())
    chunked = np.concatenate(list(_counts(50, Bootstrap(30, 7), 0, chunk=7)))
    assert chunked.shape == (30, 50)


def test_grouped_queries_are_resampled_as_whole_groups(tmp_path: Path) -> None:
    """Oracle: every query written twice in one group gives exactly the resamples of the queries written once
    (the groups are drawn as the single queries were; a group's two copies weigh like one query twice)."""
    first = ranks(3, n=60)
    once = per_query(first)
    twice = PerQuery(
        tuple(f"{q}-{copy}" for q in once.query_ids for copy in "ab"),
        per_query(np.repeat(first, 2)).ranking, group=tuple(np.repeat(once.query_ids, 2)),
    )
    write_scored_run(tmp_path, "once__synth-id", 0, once)
    write_scored_run(tmp_path, "twice__synth-id", 0, twice)
    write_scored_run(tmp_path, "twice-ungrouped__synth-id", 0, PerQuery(twice.query_ids, twice.ranking))
    table = _table(tmp_path)
    samples = {label: table.samples[label].samples["mAP"] for label in table.samples}
    np.testing.assert_allclose(samples["twice__synth-id"], samples["once__synth-id"], rtol=0, atol=1e-12)
    width = {label: np.ptp(np.percentile(s, [2.5, 97.5])) for label, s in samples.items()}
    assert width["twice-ungrouped__synth-id"] < 0.85 * width["twice__synth-id"]  # copies taken as independent
    ((counts, _),) = list(_weights(twice, 120, 0, Bootstrap(20, 0), chunk=100))
    assert (counts[:, 0::2] == counts[:, 1::2]).all() and (counts.sum(1) == 120).all()


def test_a_groups_text_and_image_queries_are_drawn_together() -> None:
    """t2i with groups in both directions: each resample counts a group's texts and its image alike (one draw of
    the family), and every query still counts once per draw of its unit."""
    texts, images = per_query(ranks(3, n=30)), per_query(ranks(4, n=30))
    families = tuple(f"fam{i // 3}" for i in range(30))
    both = PerQuery(texts.query_ids, texts.ranking, group=families,
                    reverse=PerQuery(tuple(f"img{i}" for i in range(30)), images.ranking, group=families))
    ((main, reverse),) = list(_weights(both, 30, 30, Bootstrap(50, 1), chunk=100))
    assert (main == reverse).all() and (main[:, 0::3] == main[:, 2::3]).all() and (main.sum(1) == 30).all()
    ungrouped = PerQuery(texts.query_ids, texts.ranking, reverse=PerQuery(both.reverse.query_ids, images.ranking))
    ((main, reverse),) = list(_weights(ungrouped, 30, 30, Bootstrap(50, 1), chunk=100))
    assert not (main == reverse).all()  # independent draws of the two directions


def test_intervals_are_deterministic_and_contain_the_point(tmp_path: Path) -> None:
    write_scored_run(tmp_path, "good__synth-id", 0, per_query(ranks(1, worst=5)))
    table = _table(tmp_path)
    row = _row(table, "good__synth-id")
    interval = table.interval(row, "mAP")
    assert interval.low < row.cells["mAP"].mean < interval.high
    assert interval == _table(tmp_path).interval(row, "mAP")
    assert interval != _table(tmp_path, Bootstrap(400, 1)).interval(row, "mAP")
    assert table.samples[row.label].samples["mAP"].shape == (400,)
    text = render_table(table)
    low, high = 100 * interval.low, 100 * interval.high
    assert f"| good__synth-id | {100 * row.cells['mAP'].mean:.2f} [{low:.2f}, {high:.2f}] |" in text
    assert "[low, high]: 95 % bootstrap interval over queries." in text


def test_paired_comparison_table_and_plot(tmp_path: Path) -> None:
    base = ranks(2, worst=30)
    write_scored_run(tmp_path, "better__synth-id", 0, per_query(np.where(base > 3, base - 3, base)))
    write_scored_run(tmp_path, "same__synth-id", 0, per_query(base))
    write_scored_run(tmp_path, "base__synth-id", 0, per_query(base))
    table = _table(tmp_path)
    by_pair = {(c.first, c.second): c for c in table.comparisons()}
    gain = by_pair[("better__synth-id", "base__synth-id")]
    assert gain.metric == "mAP" and gain.difference > 0 and gain.interval.low > 0
    assert gain.share_positive == 1.0 and gain.verdict == "holds" and gain.queries == 200
    tie = by_pair.get(("base__synth-id", "same__synth-id")) or by_pair[("same__synth-id", "base__synth-id")]
    assert (tie.difference, tie.interval.low, tie.interval.high, tie.verdict) == (0.0, 0.0, 0.0, "not significant")
    text = render_table(table)
    assert ("Paired comparisons on mAP (percentage points; 95 % paired bootstrap interval over the same 200 "
            "queries)") in text
    assert f"| better__synth-id | base__synth-id | {100 * gain.difference:+.2f} |" in text
    assert "table__paired.png" not in text
    assert any(name.endswith("__paired.png") for name in table_plots(table))


def test_seeds_average_in_every_resample(tmp_path: Path) -> None:
    write_scored_run(tmp_path, "m__synth-id", 0, per_query(ranks(3, worst=5)))
    write_scored_run(tmp_path, "m__synth-id", 1, per_query(ranks(4, worst=5)))
    table = _table(tmp_path)
    (row,) = table.rows
    assert len(row.runs) == 2 and row.cells["mAP"].std is not None
    samples = table.samples[row.label]
    assert isinstance(samples, RowSamples)
    assert "±" in render_table(table) and "[" in render_table(table)


@pytest.mark.parametrize(("setup", "reason"), [
    (lambda root: write_scored_run(root, "m__synth-id", 0, per_query(ranks(5)), with_file=False),
     r"no interval \(no per_query.jsonl in \S+\)"),
    (lambda root: write_scored_run(root, "m__synth-id", 0, per_query(ranks(5))).with_name("per_query.jsonl")
     .write_text('{"direction": "main", "query_id": "q", "rank": 1, "ap": 1.0}\n'),
     r"no interval \(\S+per_query.jsonl does not reproduce results.json \(R@1: 1.000000 vs"),
    (lambda root: write_scored_run(root, "m__synth-id", 0, per_query(ranks(5))).with_name("per_query.jsonl")
     .write_text("not json\n"), r"no interval \(\S+per_query.jsonl: line 1: invalid JSON"),
    (lambda root: [write_scored_run(root, "m__synth-id", s, per_query(ranks(5), ids=[f"{s}-{i}" for i in range(200)]))
                   for s in (0, 1)], r"no interval \(its seeds were evaluated on different queries\)"),
])
def test_rows_without_usable_per_query_data_say_why(tmp_path: Path, setup, reason: str) -> None:
    setup(tmp_path)
    text = render_table(_table(tmp_path))
    assert re.search(r"- m__synth-id: " + reason, text), text
    assert "[low, high]" not in text and "Paired comparisons" not in text


def test_rows_on_different_queries_are_not_compared(tmp_path: Path) -> None:
    write_scored_run(tmp_path, "a__synth-id", 0, per_query(ranks(6)))
    write_scored_run(tmp_path, "b__synth-id", 0, per_query(ranks(7), ids=[f"x{i}" for i in range(200)]))
    table = _table(tmp_path)
    assert table.comparisons() == []
    a, b = table.rows
    assert table.compare(a, b, "mAP") == f"{a.label} and {b.label} were evaluated on different queries"


def test_rows_on_the_same_queries_with_other_groups_say_so(tmp_path: Path) -> None:
    plain = per_query(ranks(6))
    write_scored_run(tmp_path, "a__synth-id", 0, plain)
    write_scored_run(tmp_path, "b__synth-id", 0, PerQuery(plain.query_ids, per_query(ranks(7)).ranking,
                                                          group=tuple(q[:-1] for q in plain.query_ids)))
    table = _table(tmp_path)
    a, b = table.rows
    assert table.compare(a, b, "mAP") == (f"{a.label} and {b.label} were evaluated on the same queries with different "
                                          "resampling groups (per_query.jsonl 'group'; test again to pair them)")


def test_bootstrap_off_keeps_todays_table(tmp_path: Path) -> None:
    write_scored_run(tmp_path, "m__synth-id", 0, per_query(ranks(8)))
    table = _table(tmp_path, bootstrap=None)
    assert table.samples is None and "[" not in render_table(table).split("Percent;")[0]


def test_t2i_resamples_both_directions_and_categories_get_subset_intervals(tmp_path: Path) -> None:
    t2i = {"name": "t2i", "task": "t2i", "ks": [1, 5, 10], "headline": [], "primary_metric": "mean_recall"}
    texts = per_query(ranks(11, worst=12))
    images = per_query(ranks(12, n=80, worst=12, invalid=0), ids=[f"img{i}" for i in range(80)])
    write_scored_run(tmp_path / "t2i", "clip__synth-t2i", 0,
                     PerQuery(texts.query_ids, texts.ranking, reverse=images), protocol=t2i)
    table = _table(tmp_path / "t2i")
    (row,) = table.rows
    for metric in ("mean_recall", "t2i/R@5", "i2t/R@5"):
        interval = table.interval(row, metric)
        assert interval.low <= row.cells[metric].mean <= interval.high, metric
    fiq = {"name": "fashioniq", "task": "cir", "ks": [1, 10, 50], "headline": ["R@10", "R@50"],
           "primary_metric": "headline", "per_category": True}
    first = ranks(13, worst=60)
    categorised = PerQuery(per_query(first).query_ids, per_query(first).ranking,
                           category=tuple(("dress", "shirt")[i % 2] for i in range(200)))
    write_scored_run(tmp_path / "fiq", "clip__synth-cir", 0, categorised, protocol=fiq)
    table = _table(tmp_path / "fiq")
    dress = next(row for row in table.subset_rows if row.subset == "dress")
    assert table.interval(dress, "dress/R@10") is not None and table.interval(table.rows[0], "headline") is not None
    assert "| clip__synth-cir | dress | " in render_table(table) and "] |" in render_table(table)

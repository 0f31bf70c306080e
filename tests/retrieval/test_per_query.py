"""Per-query outcomes: computed by run_protocol, written and read back, and every metric recomputed from them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fashion_bench.contracts import PER_QUERY_NAME
from fashion_bench.retrieval import EvalInputs, get_protocol, run_protocol
from fashion_bench.retrieval.per_query import (
    PerQuery,
    PerQueryError,
    Ranking,
    metric_values,
    read_per_query,
    write_per_query,
)

CATEGORIES = ("dress", "shirt", "toptee")


def random_inputs(n_q: int = 40, n_g: int = 60, seed: int = 0) -> EvalInputs:
    """Tied integer embeddings; some queries lose their only positive to the exclusions (invalid queries)."""
    gen = torch.Generator().manual_seed(seed)
    gallery = torch.randint(-2, 3, (n_g, 5), generator=gen).float()
    query = torch.randint(-2, 3, (n_q, 5), generator=gen).float()
    identity = [f"id{i % 12}" for i in range(n_g)]
    domain = ["shop" if (i // 12) % 2 else "live" for i in range(n_g)]
    refs = torch.randint(0, n_g, (n_q,), generator=gen).tolist()
    positives = [[g for g in range(n_g) if identity[g] == identity[r]] for r in refs]
    positives[:3] = [[refs[0]], [refs[1]], [refs[2]]]  # only the reference: invalid once it is excluded
    return EvalInputs(
        query, gallery, [f"q{i}" for i in range(n_q)], [f"g{i}" for i in range(n_g)],
        positives=positives,
        subset=[torch.randperm(n_g, generator=gen)[:6].tolist() for _ in range(n_q)],
        query_category=[CATEGORIES[i % 3] for i in range(n_q)],
        query_image_index=refs,
        query_identity=[identity[r] for r in refs],
        query_domain=[domain[r] for r in refs],
        gallery_identity=identity,
        gallery_domain=domain,
        gallery_category=[CATEGORIES[i % 3] for i in range(n_g)],
    )


@pytest.mark.parametrize("name", ["t2i", "id", "id-intra-cross", "reid", "inshop", "cir", "fashioniq",
                                  "fashioniq-pooled", "cirr", "shoes"])
def test_metrics_recomputed_from_the_file_equal_run_protocol(name: str, tmp_path: Path) -> None:
    protocol = get_protocol(name)
    result = run_protocol(protocol, random_inputs(), top_n=0)
    path = write_per_query(tmp_path / PER_QUERY_NAME, result.per_query)
    per_query = read_per_query(path)
    recomputed = {k: float(v[0]) for k, v in metric_values(per_query, protocol).items()}
    expected = dict(result.metrics)
    expected |= {f"{s}/{k}": v for s, m in result.per_subset.items() for k, v in m.items() if not k.startswith("num_")}
    assert recomputed.keys() == expected.keys()
    for key, value in expected.items():
        assert recomputed[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key
    assert int(per_query.ranking.valid.sum()) == result.num_valid_queries
    assert per_query.query_ids == tuple(f"q{i}" for i in range(40))


def test_what_each_protocol_records(tmp_path: Path) -> None:
    inputs = random_inputs()
    t2i = run_protocol("t2i", inputs, top_n=0).per_query
    assert t2i.reverse is not None and t2i.reverse.query_ids == tuple(inputs.gallery_ids)
    assert not t2i.category and not t2i.subsets
    id_subsets = run_protocol("id-intra-cross", inputs, top_n=0).per_query
    assert set(id_subsets.subsets) == {"intra", "cross"} and id_subsets.reverse is None
    cirr = run_protocol("cirr", inputs, top_n=0).per_query
    assert set(cirr.subsets) == {"Rsubset"}
    assert cirr.subsets["Rsubset"].first.max() <= 6  # ranks within the six candidates
    fiq = run_protocol("fashioniq", inputs, top_n=0).per_query
    assert fiq.category == tuple(inputs.query_category)
    assert not cirr.ranking.valid[:3].any() and (cirr.ranking.ap[:3] == 0).all()


def test_file_lines_follow_the_documented_format(tmp_path: Path) -> None:
    per_query = PerQuery(("b", "a"), Ranking(np.array([3, 0]), np.array([0.5, 0.0])), ("dress", "shirt"),
                         {"Rsubset": Ranking(np.array([1, 0]), np.array([1.0, 0.0]))})
    path = write_per_query(tmp_path / "sub" / PER_QUERY_NAME, per_query)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [
        {"direction": "main", "query_id": "b", "rank": 3, "ap": 0.5, "category": "dress",
         "subsets": {"Rsubset": {"rank": 1, "ap": 1.0}}},
        {"direction": "main", "query_id": "a", "rank": None, "ap": None, "category": "shirt",
         "subsets": {"Rsubset": {"rank": None, "ap": None}}},
    ]
    assert not list(path.parent.glob("*.tmp"))
    ordered = read_per_query(path).sorted()
    assert ordered.query_ids == ("a", "b") and ordered.category == ("shirt", "dress")
    assert ordered.ranking.first.tolist() == [0, 3] and ordered.subsets["Rsubset"].first.tolist() == [0, 1]


def test_query_groups_travel_from_the_inputs_through_the_file(tmp_path: Path) -> None:
    inputs = random_inputs()
    assert not run_protocol("fashioniq", inputs, top_n=0).per_query.group  # no group named: none recorded
    inputs.query_group = [f"family{i // 4}" if i % 5 else "" for i in range(40)]
    per_query = run_protocol("fashioniq", inputs, top_n=0).per_query
    path = write_per_query(tmp_path / PER_QUERY_NAME, per_query)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line.get("group", "") for line in lines] == inputs.query_group
    again = read_per_query(path)
    assert again.group == tuple(inputs.query_group)
    clusters, reverse = again.clusters()
    assert reverse.size == 0 and len(set(clusters[[1, 2, 3]].tolist())) == 1 and clusters[0] != clusters[5]  # q0, q5: groups of their own
    assert len(set(clusters.tolist())) == len({g for g in inputs.query_group if g}) + inputs.query_group.count("")
    ordered = again.sorted()
    assert dict(zip(ordered.query_ids, ordered.group)) == dict(zip(again.query_ids, again.group))


def test_t2i_images_take_the_group_of_their_texts_and_share_its_units(tmp_path: Path) -> None:
    """An i2t query (a gallery image) takes the group of the text queries it is a positive of when they agree;
    with texts of two groups, or none, it is a group of its own. Both directions number the groups together."""
    g = 4
    inputs = EvalInputs(
        query_emb=torch.randn(5, 8), gallery_emb=torch.randn(g, 8), query_ids=[f"t{i}" for i in range(5)],
        gallery_ids=[f"img{j}" for j in range(g)], positives=[[0], [0], [1], [1], [2]],
        query_group=["famA", "famA", "famA", "famB", ""],
    )
    per_query = run_protocol("t2i", inputs, top_n=0).per_query
    assert per_query.reverse.group == ("famA", "", "", "")  # img1: famA and famB; img2: ungrouped text; img3: none
    again = read_per_query(write_per_query(tmp_path / PER_QUERY_NAME, per_query))
    assert again.reverse.group == per_query.reverse.group and again.group == per_query.group
    main, reverse = again.clusters()
    assert main.tolist()[:4] == [0, 0, 0, 1] and reverse[0] == 0  # famA's texts and image: one unit
    assert len({*main.tolist(), *reverse.tolist()}) == 2 + 1 + 3  # two groups, t4 alone, img1-img3 alone


def test_bootstrap_weights_give_one_value_per_resample() -> None:
    per_query = PerQuery(("a", "b"), Ranking(np.array([1, 4]), np.array([1.0, 0.25])))
    protocol = get_protocol("id")
    values = metric_values(per_query, protocol, weights=np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    assert values["R@1"].tolist() == [1.0, 0.0, 0.5]
    assert values["mAP"].tolist() == [1.0, 0.25, 0.625]
    with pytest.raises(ValueError, match=r"weights must have shape \[B, 2\], got \[3\]"):
        metric_values(per_query, protocol, weights=np.ones(3))
    with pytest.raises(ValueError, match="a t2i protocol needs the i2t direction"):
        metric_values(per_query, get_protocol("t2i"))
    assert math.isnan(metric_values(per_query, protocol, weights=np.zeros((1, 2)))["mAP"][0])


def test_mismatched_lengths_are_rejected() -> None:
    with pytest.raises(ValueError, match="every per-query array needs 2 entries"):
        PerQuery(("a", "b"), Ranking(np.array([1]), np.array([1.0])))


MAIN = '{"direction": "main", "query_id": "a", "rank": 1, "ap": 1.0}'


@pytest.mark.parametrize(("text", "reason"), [
    ("", "no query (no line with direction 'main')"),
    ("{not json\n", "line 1: invalid JSON"),
    ("[1]\n", "line 1: expected a JSON object, got list"),
    ('{"direction": "t2i", "query_id": "a", "rank": 1, "ap": 1.0}\n', "line 1: 'direction' must be 'main' or 'i2t'"),
    ('{"direction": "main", "query_id": "", "rank": 1, "ap": 1.0}\n', "line 1: 'query_id' must be a non-empty"),
    ('{"direction": "main", "query_id": "a", "rank": 0, "ap": 1.0}\n', "line 1: 'rank' must be a positive integer"),
    ('{"direction": "main", "query_id": "a", "rank": 2, "ap": 1.5}\n', "line 1: 'ap' must be a number in (0, 1]"),
    ('{"direction": "main", "query_id": "a", "rank": 2}\n', "line 1: 'ap' must be a number in (0, 1]"),
    (MAIN + "\n" + MAIN + "\n", "query_id 'a' appears more than once in direction 'main'"),
    ('{"direction": "main", "query_id": "a", "rank": 1, "ap": 1.0, "category": "x"}\n'
     '{"direction": "main", "query_id": "b", "rank": 1, "ap": 1.0}\n', "line 2: 'category' must be on every main"),
    ('{"direction": "main", "query_id": "a", "rank": 1, "ap": 1.0, "category": 3}\n', "line 1: 'category' must be a"),
    ('{"direction": "main", "query_id": "a", "rank": 1, "ap": 1.0, "subsets": {"intra": {"rank": 1, "ap": 1.0}}}\n'
     '{"direction": "main", "query_id": "b", "rank": 1, "ap": 1.0}\n', "line 2: 'subsets' must name the same"),
    ('{"direction": "main", "query_id": "a", "rank": 1, "ap": 1.0, "subsets": {"intra": {"rank": -1, "ap": 1}}}\n',
     "line 1: subsets.intra: 'rank' must be a positive integer"),
    ('{"direction": "main", "query_id": "a", "rank": 1, "ap": 1.0, "subsets": [1]}\n', "line 1: 'subsets' must be an"),
    ('{"direction": "main", "query_id": "a", "rank": 1, "ap": 1.0, "group": 7}\n', "line 1: 'group' must be a non-blank string, got 7"),
    ('{"direction": "i2t", "query_id": "a", "rank": 1, "ap": 1.0, "group": "  "}\n',
     "line 1: 'group' must be a non-blank string, got '  '"),
])
def test_malformed_files_are_named(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / PER_QUERY_NAME
    path.write_text(text)
    with pytest.raises(PerQueryError) as info:
        read_per_query(path)
    assert str(info.value).startswith(f"{path}: ") and reason in str(info.value)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(PerQueryError, match="cannot read"):
        read_per_query(tmp_path / "missing.jsonl")

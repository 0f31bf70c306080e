"""run_protocol on hand-made cases whose expected values are worked out in the comments."""

from __future__ import annotations

import json

import pytest
import torch

from fashion_bench.retrieval import PROTOCOLS, EvalInputs, Protocol, get_protocol, run_protocol


def line_gallery(scores):
    """Gallery items on a line: with the query [1, 0], item i scores scores[i]; with [-1, 0], -scores[i]."""
    return torch.tensor([[s, 0.0] for s in scores])


def ids(n, prefix):
    return [f"{prefix}{i}" for i in range(n)]


@pytest.mark.parametrize("backend", ["fast", "exact"])
def test_cirr(backend):
    gallery = line_gallery([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    inputs = EvalInputs(
        query_emb=torch.tensor([[1.0, 0.0], [-1.0, 0.0]]),
        gallery_emb=gallery,
        query_ids=["p0", "p1"],
        gallery_ids=ids(6, "img"),
        positives=[[2], [4]],
        exclude=[[], []],
        subset=[[0, 1, 2, 5], [5, 4, 3]],
        query_image_index=[0, 5],
    )
    result = run_protocol("cirr", inputs, backend=backend)
    # q0: reference 0 removed -> 1, 2(+), 3, 4, 5: rank 2. Subset without the reference: 1, 2(+), 5: rank 2.
    # q1 (scores reversed): reference 5 removed -> 4(+), 3, ...: rank 1. Subset: 4(+), 3: rank 1.
    m = result.metrics
    assert m["R@1"] == 0.5 and m["R@5"] == 1.0 and m["R@50"] == 1.0
    assert m["mAP"] == pytest.approx(0.75)
    assert (m["Rsubset@1"], m["Rsubset@2"], m["Rsubset@3"]) == (0.5, 1.0, 1.0)
    assert m["headline"] == pytest.approx((1.0 + 0.5) / 2)
    assert list(m) == get_protocol("cirr").metric_names()
    assert result.topk.shape == (2, 50)
    assert result.topk[0, :6].tolist() == [1, 2, 3, 4, 5, -1]
    assert result.topk[1, :6].tolist() == [4, 3, 2, 1, 0, -1]
    assert torch.isinf(result.topk_scores[0, 5:]).all()
    assert result.topk_scores[0, :2].tolist() == pytest.approx([0.8, 0.7])
    assert result.subset_topk.tolist() == [[1, 2, 5], [4, 3, -1]]
    assert (result.num_queries, result.num_valid_queries, result.gallery_size) == (2, 2, 6)


def test_fashioniq_per_category_average_and_reference_kept():
    gallery = line_gallery([1 - 0.05 * i for i in range(12)])
    query = torch.tensor([[1.0, 0.0]] * 3)
    inputs = EvalInputs(
        query_emb=query,
        gallery_emb=gallery,
        query_ids=ids(3, "q"),
        gallery_ids=ids(12, "g"),
        positives=[[1], [0], [11]],
        query_category=["dress", "shirt", "shirt"],
        query_image_index=[0, 3, 0],
    )
    result = run_protocol("fashioniq-pooled", inputs)
    # dress q0: its reference 0 stays first, target 1 ranks 2. shirt: q1 rank 1, q2 rank 12.
    dress, shirt = result.per_subset["dress"], result.per_subset["shirt"]
    assert (dress["R@1"], dress["R@10"], dress["R@50"], dress["mAP"]) == (0.0, 1.0, 1.0, 0.5)
    assert (shirt["R@1"], shirt["R@10"], shirt["R@50"]) == (0.5, 0.5, 1.0)
    assert shirt["mAP"] == pytest.approx((1 + 1 / 12) / 2)
    assert shirt["num_valid_queries"] == 2
    m = result.metrics
    assert m["R@10"] == pytest.approx(0.75)  # mean of categories, not 2/3 pooled over queries
    assert m["R@1"] == pytest.approx(0.25) and m["R@50"] == 1.0
    assert m["mAP"] == pytest.approx((0.5 + 13 / 24) / 2)
    assert m["headline"] == pytest.approx((0.75 + 1.0) / 2)
    assert result.topk[0, 0] == 0  # the reference is not removed


def id_inputs():
    #            g0    g1    g2    g3    g4    g5
    # identity   A     A     B     A     B     A
    # domain     live  shop  live  live  shop  shop
    # score      0.9   0.8   0.7   0.6   0.5   0.4 (same for both queries)
    return EvalInputs(
        query_emb=torch.tensor([[1.0, 0.0], [1.0, 0.0]]),
        gallery_emb=line_gallery([0.9, 0.8, 0.7, 0.6, 0.5, 0.4]),
        query_ids=["qa", "qb"],
        gallery_ids=ids(6, "g"),
        positives=[[0, 1, 3, 5], [2, 4]],
        query_image_index=[0, 4],
        query_identity=["A", "B"],
        query_domain=["live", "shop"],
        gallery_identity=["A", "A", "B", "A", "B", "A"],
        gallery_domain=["live", "shop", "live", "live", "shop", "shop"],
    )


def test_reid_same_identity_and_domain_rule():
    result = run_protocol("reid", id_inputs())
    # qa (A, live): g0 and g3 removed -> g1(+), g2, g4, g5(+): AP (1 + 2/4) / 2 = 0.75, rank 1 hit.
    # qb (B, shop): g4 removed -> g0, g1, g2(+), g3, g5: AP 1/3.
    assert result.metrics["mAP"] == pytest.approx((0.75 + 1 / 3) / 2)
    assert result.metrics["R@1"] == 0.5 and result.metrics["R@5"] == 1.0
    assert result.topk[0, :5].tolist() == [1, 2, 4, 5, -1]
    assert result.per_subset == {}


def test_id_intra_and_cross_domain_subsets():
    result = run_protocol("id-intra-cross", id_inputs())
    # whole gallery, own image removed: qa g1(+), g2, g3(+), g4, g5(+): AP (1 + 2/3 + 3/5) / 3; qb rank 3: 1/3
    assert result.metrics["mAP"] == pytest.approx((34 / 45 + 1 / 3) / 2)
    intra, cross = result.per_subset["intra"], result.per_subset["cross"]
    # intra: qa sees live items g2, g3(+): AP 1/2; qb sees shop g1, g5: no positive, not valid
    assert intra["mAP"] == pytest.approx(0.5) and intra["R@1"] == 0.0
    assert (intra["num_queries"], intra["num_valid_queries"]) == (2, 1)
    # cross: qa sees shop g1(+), g4, g5(+): AP (1 + 2/3) / 2; qb sees live g0, g2(+), g3: AP 1/2
    assert cross["mAP"] == pytest.approx((5 / 6 + 0.5) / 2)
    assert cross["R@1"] == 0.5 and cross["num_valid_queries"] == 2


def test_t2i_with_reverse_direction():
    gallery = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, 0]])
    texts = torch.tensor([[1.0, 0.5, 0], [0.2, 1.0, 0], [0.9, 0, 0.3], [0, 0.6, 0.5]])
    inputs = EvalInputs(texts, gallery, ids(4, "t"), ids(4, "img"), positives=[[0], [1], [2], [2]])
    result = run_protocol("t2i", inputs)
    m = result.metrics
    # t2i: t0, t1 rank 1; t2 (g0 .9 first) and t3 (g1 .6 first) rank 2.
    assert (m["t2i/R@1"], m["t2i/R@5"], m["t2i/R@10"]) == (0.5, 1.0, 1.0)
    assert m["R@1"] == 0.5 and m["mAP"] == pytest.approx(0.75)
    # i2t: g0 -> t0 first, g1 -> t1 first, g2 -> t3 (0.5) first, a positive; g3 has no text: not valid.
    assert (m["i2t/R@1"], m["i2t/R@5"], m["i2t/R@10"]) == (1.0, 1.0, 1.0)
    assert m["mean_recall"] == pytest.approx(5.5 / 6)
    assert result.num_valid_queries == 4 and result.subset_topk is None


def test_protocol_dicts_and_errors():
    for name, protocol in PROTOCOLS.items():
        assert protocol.name == name
        assert json.loads(json.dumps(protocol.to_dict())) == protocol.to_dict()
        assert Protocol.from_dict(protocol.to_dict()) == protocol
        assert protocol.primary_metric in protocol.metric_names() + protocol.subset_metric_names()
    assert Protocol.from_dict({"name": "x", "task": "cir", "ks": [1, 5], "primary_metric": "R@5"}).ks == (1, 5)
    with pytest.raises(ValueError, match=r"unknown protocol keys \['exclude_ref', 'top_k'\]"):
        Protocol.from_dict({"task": "cir", "exclude_ref": True, "top_k": 5})
    assert PROTOCOLS["id-intra-cross"].primary_metric == "cross/mAP"  # video-to-shop selects the checkpoints
    with pytest.raises(ValueError, match=r"primary_metric 'cross/mAP' is not a metric"):
        Protocol(name="p", task="id", primary_metric="cross/mAP")  # no domain subsets
    with pytest.raises(ValueError, match=r"primary_metric 'R@20' is not a metric"):
        Protocol(name="p", task="cir", ks=(1, 10), primary_metric="R@20")
    with pytest.raises(ValueError, match=r"headline metrics \['Rsubset@1'\]"):
        Protocol(name="p", task="cir", headline=("Rsubset@1",))
    with pytest.raises(ValueError, match="ks must be positive integers"):
        Protocol(task="cir", ks=(0, 5))
    with pytest.raises(ValueError, match="unknown protocol 'nope'"):
        get_protocol("nope")
    get_protocol("cirr").ks = (1,)
    assert PROTOCOLS["cirr"].ks == (1, 5, 10, 50)  # the registry hands out copies


def test_missing_inputs_are_reported():
    inputs = EvalInputs(torch.ones(2, 2), torch.ones(3, 2), ["a", "b"], ids(3, "g"), positives=[[0], [1]])
    with pytest.raises(ValueError, match=r"protocol 'cirr' needs EvalInputs.query_image_index"):
        run_protocol("cirr", inputs)
    inputs.query_category = ["dress"]
    with pytest.raises(ValueError, match=r"EvalInputs.query_category has 1 entries for 2 queries"):
        run_protocol("fashioniq-pooled", inputs)


@pytest.mark.parametrize("name", ["id-intra-cross", "reid", "t2i", "cirr"])
def test_backends_agree_on_random_tied_inputs(name):
    gen = torch.Generator().manual_seed(0)
    n_q, n_g = 40, 60
    gallery = torch.randint(-2, 3, (n_g, 5), generator=gen).float()
    query = torch.randint(-2, 3, (n_q, 5), generator=gen).float()
    identity = [f"id{i % 12}" for i in range(n_g)]
    domain = ["shop" if (i // 12) % 2 else "live" for i in range(n_g)]  # each identity in both domains
    refs = torch.randint(0, n_g, (n_q,), generator=gen).tolist()
    inputs = EvalInputs(
        query, gallery, ids(n_q, "q"), ids(n_g, "g"),
        positives=[[g for g in range(n_g) if identity[g] == identity[r]] for r in refs],
        subset=[torch.randperm(n_g, generator=gen)[:6].tolist() for _ in range(n_q)],
        query_image_index=refs,
        query_identity=[identity[r] for r in refs],
        query_domain=[domain[r] for r in refs],
        gallery_identity=identity,
        gallery_domain=domain,
    )
    fast, exact = run_protocol(name, inputs, top_n=8), run_protocol(name, inputs, top_n=8, backend="exact")
    assert 0 < fast.metrics["mAP"] < 1
    assert fast.metrics == pytest.approx(exact.metrics, abs=1e-12)
    assert fast.per_subset == exact.per_subset
    assert torch.equal(fast.topk, exact.topk) and torch.equal(fast.topk_scores, exact.topk_scores)

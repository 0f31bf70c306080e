"""The concept knowledge graph: chunker, miner, matcher, MMR, the jsonl folder, `kg build` and its evaluation."""

from __future__ import annotations

import json

import pytest
import torch

from fashion_bench.kg import io
from fashion_bench.kg.chunker import RuleChunker, make_chunker
from fashion_bench.kg.evaluate import evaluate_graph
from fashion_bench.kg.graph import ConceptGraph
from fashion_bench.kg.images import concept_images, mmr
from fashion_bench.kg.matcher import ConceptMatcher
from fashion_bench.kg.miner import mine_graph

TEXTS = ["red striped long sleeve shirt", "striped long sleeve shirt in red", "a long sleeve shirt in blue, plain",
         "white short sleeve t-shirt with a logo", "short sleeve t-shirt in white"]


def test_chunks_end_in_a_product_noun_and_fold_trailing_in_modifiers():
    chunk = RuleChunker()
    assert chunk("short sleeve t-shirt in white") == ["white short sleeve t-shirt"]
    assert chunk("this top is a striped red shirt with long sleeves") == ["top", "striped red shirt"]
    assert chunk("a shirt in crimson with stripes") == ["crimson shirt"]
    assert chunk("with a small white circle logo") == []
    assert RuleChunker(max_words=2)("red striped long sleeve shirt") == ["sleeve shirt"]


def test_bad_chunker_settings_are_named():
    with pytest.raises(ValueError, match="unknown chunker 'parser'"):
        make_chunker("parser")
    with pytest.raises(ValueError, match="max_words must be at least 1"):
        RuleChunker(max_words=0)
    with pytest.raises(ValueError, match="min_count must be at least 1"):
        mine_graph(TEXTS, RuleChunker(), min_count=0)


def test_is_a_edges_drop_whole_modifiers():
    graph = mine_graph(TEXTS * 2, RuleChunker())
    parent = {p: graph.parent_phrase(i) for i, p in enumerate(graph.phrases)}
    assert parent["red striped long sleeve shirt"] == "striped long sleeve shirt"
    assert parent["striped long sleeve shirt"] == "long sleeve shirt"
    assert parent["long sleeve shirt"] == "shirt"  # "sleeve" never begins a phrase: no "sleeve shirt"
    assert parent["white short sleeve t-shirt"] == "short sleeve t-shirt" and parent["t-shirt"] == ""
    assert "sleeve shirt" not in parent
    assert graph.counts[graph.index["long sleeve shirt"]] == 0  # made by dropping a modifier, never written alone


def test_matcher_pads_with_ancestors_once_each_then_minus_one():
    graph = mine_graph(TEXTS * 2, RuleChunker())
    match = ConceptMatcher(graph, RuleChunker(), slots=5).match
    ids = match("red striped long sleeve shirt")
    names = [graph.phrases[i] for i in ids]
    assert names[:4] == ["red striped long sleeve shirt", "striped long sleeve shirt", "long sleeve shirt", "shirt"]
    assert ids[4] == -1 and len(set(ids[:4])) == 4
    assert match("nothing to see here") == [-1] * 5
    two = [graph.phrases[i] for i in match("red striped long sleeve shirt and a white short sleeve t-shirt") if i >= 0]
    assert two[:2] == ["red striped long sleeve shirt", "white short sleeve t-shirt"]  # written concepts first
    assert len(two) == len(set(two)) == 5
    with pytest.raises(ValueError, match="concept slots must be at least 1"):
        ConceptMatcher(graph, RuleChunker(), slots=0)


def test_mmr_keeps_the_best_then_trades_relevance_for_diversity():
    concept = torch.tensor([1.0, 0.0])
    candidates = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.99, 0.01], [0.6, 0.8]]), dim=-1)
    relevance = (candidates @ concept)[None]
    assert mmr(relevance, candidates[None], keep=2, diversity=0.8).tolist() == [[0, 2]]
    assert mmr(relevance, candidates[None], keep=2, diversity=0.0).tolist() == [[0, 1]]
    index, score = concept_images(concept[None], candidates, candidates=3, keep=2)
    assert index.tolist() == [[0, 2]] and score.shape == (1, 2)
    with pytest.raises(ValueError, match="diversity must be in"):
        concept_images(concept[None], candidates, diversity=1.5)
    with pytest.raises(ValueError, match="keep <= candidates"):
        concept_images(concept[None], candidates, candidates=5, keep=10)


def sequential_mmr(concept: torch.Tensor, candidates: torch.Tensor, keep: int, diversity: float) -> list[int]:
    """The definition, one concept and one pick at a time (the oracle of the batched version)."""
    relevance, mutual, chosen = candidates @ concept, candidates @ candidates.t(), []
    while len(chosen) < min(keep, len(candidates)):
        redundancy = mutual[:, chosen].amax(dim=1) if chosen else torch.zeros(len(candidates))
        score = (1 - diversity) * relevance - (diversity * redundancy if chosen else 0.0)
        score[chosen] = float("-inf")
        chosen.append(int(score.argmax()))
    return chosen


def test_batched_mmr_keeps_what_one_concept_at_a_time_keeps():
    torch.manual_seed(0)
    concepts = torch.nn.functional.normalize(torch.randn(300, 16), dim=-1)
    images = torch.nn.functional.normalize(torch.randn(500, 16), dim=-1)
    index, score = concept_images(concepts, images, candidates=20, keep=10, diversity=0.8, chunk=128)
    for row, concept in enumerate(concepts):
        top = (images @ concept).topk(20).indices
        expected = top[sequential_mmr(concept, images[top], 10, 0.8)]
        assert index[row].tolist() == expected.tolist()
        torch.testing.assert_close(score[row], images[expected] @ concept)


def test_graph_folder_round_trips_and_bad_files_are_named(tmp_path):
    graph = mine_graph(TEXTS * 2, RuleChunker())
    io.write_graph(tmp_path, graph)
    again = io.read_graph(tmp_path)
    assert again.phrases == graph.phrases and again.parents == graph.parents and again.counts == graph.counts
    lines = (tmp_path / io.PARENTS).read_text().splitlines()
    (tmp_path / io.PARENTS).write_text("\n".join([*lines, "{not json"]) + "\n")
    with pytest.raises(ValueError, match=rf"parents.jsonl, line {len(lines) + 1}: malformed JSON"):
        io.read_graph(tmp_path)
    (tmp_path / io.PARENTS).write_text('{"phrase": "shirt"}\n')
    with pytest.raises(ValueError, match=r"parents.jsonl, line 1: missing field\(s\) \['parent'\]"):
        io.read_graph(tmp_path)
    (tmp_path / io.PARENTS).write_text('{"phrase": "shirt", "parent": "garment"}\n')
    with pytest.raises(ValueError, match=r"parents.jsonl: parents \['garment'\] are not concepts"):
        io.read_graph(tmp_path)
    with pytest.raises(ValueError, match="cannot read the knowledge-graph file"):
        io.read_graph(tmp_path / "missing")
    with pytest.raises(ValueError, match="repeated concepts"):
        ConceptGraph(["a", "a"], [-1, -1], [1, 1])


def test_evaluation_against_world_json(tiny_world, tmp_path):
    from fashion_bench.data.schema import read_items

    texts = [t for item in read_items(tiny_world).values() for t in item.text]
    scores = evaluate_graph(mine_graph(texts, RuleChunker()), tiny_world)
    assert scores["concepts"]["correct"] > 0 and scores["concepts"]["ground_truth"] > 100
    assert scores["edges"]["precision"] == 1.0 and scores["edges"]["recall"] == 1.0
    (tmp_path / "world.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ValueError, match="world.json: no ground-truth concept hierarchy"):
        evaluate_graph(mine_graph(texts, RuleChunker()), tmp_path)


def _kg_args(tiny_world, out, *extra):
    return ["build", "--config", "configs/data/synth-t2i.yaml", "--out", str(out), "--encoder", "tiny-vit-64",
            "--data.root", str(tiny_world.parent), "--data.synthetic_preset", "tiny", "--data.num_workers", "0", "--quiet", *extra]


def test_kg_build_writes_the_folder_prints_scores_and_resumes(tiny_world, tmp_path, capsys, monkeypatch):
    from pathlib import Path

    from fashion_bench.cli import main

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    out = tmp_path / "kg"
    assert main(["kg", *_kg_args(tiny_world, out)]) == 0
    printed = capsys.readouterr().out
    assert "world.json: concepts: precision" in printed and "edges: precision" in printed
    summary = json.loads((out / io.SUMMARY).read_text())
    assert summary["concepts"] == len(io.read_graph(out)) and summary["evaluation"]["concepts"]["recall"] > 0
    assert summary["chunker_used"] == make_chunker("auto").kind  # what `chunker: auto` resolved to on this machine
    images = [json.loads(line) for line in (out / io.IMAGES).read_text().splitlines()]
    assert len(images) == summary["concepts"] and all(len(r["item_ids"]) == 10 for r in images)
    # interrupted mid-way (a torn last line): the rerun keeps the finished concepts and redoes the rest
    lines = (out / io.IMAGES).read_text().splitlines()
    (out / io.IMAGES).write_text("\n".join(lines[:3]) + "\n" + lines[3][:10])
    assert main(["kg", *_kg_args(tiny_world, out)]) == 0
    again = [json.loads(line) for line in (out / io.IMAGES).read_text().splitlines()]
    assert sorted(r["phrase"] for r in again) == sorted(r["phrase"] for r in images)
    assert main(["kg", *_kg_args(tiny_world, out, "--min_count", "3")]) == 2
    assert "built with other settings (settings differ)" in capsys.readouterr().err


def test_kg_build_bad_inputs_are_named(tmp_path, capsys):
    from fashion_bench.cli import main

    assert main(["kg", "build", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "kg")]) == 2
    assert "none.yaml: cannot read the config" in capsys.readouterr().err
    (tmp_path / "enc.yaml").write_text("pretrained: x\n")
    (tmp_path / "data.yaml").write_text("dataset: synth-t2i\n")
    assert main(["kg", "build", "--config", str(tmp_path / "data.yaml"), "--out", str(tmp_path / "kg"), "--encoder", str(tmp_path / "enc.yaml")]) == 2
    assert "enc.yaml: not an encoder config" in capsys.readouterr().err

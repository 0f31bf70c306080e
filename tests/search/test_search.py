"""`fashion-bench index` / `search` and the Searcher API on the tiny synthetic world, with methods saved directly as
checkpoints (random tiny CLIPs: the tests check the plumbing and the ranking, not retrieval quality)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fashion_bench.stages import StagePublisher, sha256

N_BUILD, N_ADD = 60, 20


def save_run(method, run: Path) -> Path:
    """A run directory as `fit` leaves it, as far as search reads it: config.yaml and published/model.ckpt."""
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("data:\n  target_pad_ratio: null\n")
    return StagePublisher._save_model(method, run / "published" / "model.ckpt")


def write_catalogue(world: Path, path: Path, start: int, stop: int) -> Path:
    lines = (world / "items.jsonl").read_text().splitlines()[start:stop]
    with path.open("w") as fh:
        for line in lines:
            record = json.loads(line)
            fh.write(json.dumps({k: record[k] for k in ("item_id", "image", "text", "identity", "category")}) + "\n")
    return path


@pytest.fixture(scope="module")
def setup(tiny_world, tmp_path_factory):
    from fashion_bench.methods.base import EncoderConfig
    from fashion_bench.methods.clip import ClipMethod
    from fashion_bench.methods.clip4cir import Clip4CirCombiner

    root = tmp_path_factory.mktemp("search")
    torch.manual_seed(0)
    clip_ckpt = save_run(ClipMethod(EncoderConfig("tiny-vit-64")), root / "runs" / "clip__synth-t2i" / "20260101-000000_seed3")
    cir_ckpt = save_run(Clip4CirCombiner(EncoderConfig("tiny-vit-64")), root / "runs" / "clip4cir__synth-cir" / "20260101-000000_seed0")
    first = write_catalogue(tiny_world, tiny_world / "search-first.jsonl", 0, N_BUILD)
    more = write_catalogue(tiny_world, tiny_world / "search-more.jsonl", N_BUILD, N_BUILD + N_ADD)
    return {"root": root, "clip": clip_ckpt, "cir": cir_ckpt, "first": first, "more": more}


@pytest.fixture(scope="module")
def clip_index(setup):
    from fashion_bench.search.build import build

    out = setup["root"] / "clip-index"
    build(setup["clip"].parents[1], setup["first"], out, progress=False)
    return out


def test_index_files_and_provenance(setup, clip_index):
    from fashion_bench.search.store import read_index_dir

    contents = read_index_dir(clip_index)
    info = contents.info
    assert info["class_path"] == "fashion_bench.methods.clip.ClipMethod" and info["method_name"] == "clip"
    assert info["experiment"] == "clip__synth-t2i" and info["seed"] == 3
    assert info["checkpoint_sha256"] == sha256(setup["clip"])
    assert info["encoder"]["name"] == "tiny-vit-64"
    assert (info["count"], info["kind"], info["recall_at_10"]) == (N_BUILD, "flat", 1.0)
    assert info["dimension"] == contents.vectors.shape[1] and contents.vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(contents.vectors, axis=1), 1.0, atol=1e-5)
    first = contents.items[0]
    assert Path(first.image).is_absolute() and first.identity and first.category and first.text


def test_text_search_equals_brute_force_ranking(setup, clip_index):
    """Scores and order equal a brute-force inner product with the evaluator's tie rule (lower index first), over
    gallery embeddings computed as the evaluator computes them."""
    from fashion_bench.data.transforms import decode_image
    from fashion_bench.search.searcher import Searcher

    searcher = Searcher.load(clip_index)
    method = searcher._loaded.method
    hits = searcher.search(text="red striped dress", k=10)
    with torch.inference_mode():
        query = method.encode_query({"text": method.preprocessing().tokenize(["red striped dress"]), "category": [""]})
        image = searcher._transform(decode_image(searcher.image_path(hits[0].item_id)))
        gallery_row = method.encode_gallery({"image_features": method.encode_images(image[None])})
    vectors = searcher._contents.vectors
    scores = vectors.astype(np.float64) @ query.double().numpy()[0]
    order = np.lexsort((np.arange(len(scores)), -scores))[:10]
    assert [h.item_id for h in hits] == [searcher._contents.items[i].item_id for i in order]
    assert [h.score for h in hits] == pytest.approx(scores[order].tolist(), abs=1e-5)
    assert [h.rank for h in hits] == list(range(1, 11))
    row = next(i for i, item in enumerate(searcher._contents.items) if item.item_id == hits[0].item_id)
    assert np.allclose(vectors[row], gallery_row.numpy()[0], atol=1e-5)


def test_image_reference_and_category(clip_index, tiny_world):
    from PIL import Image

    from fashion_bench.search.searcher import Searcher

    searcher = Searcher.load(clip_index)
    assert searcher.query_kinds == ("text", "image", "image+text") and len(searcher) == N_BUILD
    item = searcher._contents.items[5]
    by_reference = searcher.run(reference=item.item_id, k=3)
    assert (by_reference.kind, by_reference.encoder) == ("image", "query")
    assert by_reference.hits[0].item_id == item.item_id and by_reference.hits[0].score == pytest.approx(1.0, abs=1e-4)
    uploaded = searcher.search(image=Image.open(item.image), k=3)
    assert uploaded[0].item_id == item.item_id
    composed = searcher.run(reference=item.item_id, text="in blue", k=3)
    assert composed.kind == "image+text" and len(composed.hits) == 3
    hits = searcher.search(text="shoes", k=50, category=item.category)
    assert hits and all(h.category == item.category for h in hits)
    assert searcher.item(item.item_id).image == Path(item.image)


def test_search_errors(clip_index):
    from fashion_bench.search.searcher import SearchError, Searcher

    searcher = Searcher.load(clip_index)
    for kwargs, message in [
        ({"text": "  "}, "empty query"),
        ({"reference": "nope"}, "'nope' is not in the index"),
        ({"text": "x", "k": 0}, "k must be"),
        ({"text": "x", "category": "hats"}, "no indexed item has category 'hats'"),
    ]:
        with pytest.raises(SearchError, match=message):
            searcher.search(**kwargs)
    with pytest.raises(SearchError, match="not in the index"):
        searcher.image_path("../../etc/passwd")


def test_composed_method(setup):
    """CLIP4Cir's Combiner answers composed queries only; an image alone is searched as a gallery item."""
    from fashion_bench.search.build import build
    from fashion_bench.search.searcher import SearchError, Searcher

    out = setup["root"] / "cir-index"
    build(setup["cir"], setup["first"], out, progress=False)
    searcher = Searcher.load(out)
    assert searcher.query_kinds == ("image", "image+text")
    reference = searcher._contents.items[0].item_id
    composed = searcher.run(reference=reference, text="is red instead of blue", k=5)
    assert (composed.kind, composed.encoder, len(composed.hits)) == ("image+text", "query", 5)
    alone = searcher.run(reference=reference, k=1)
    assert alone.encoder == "gallery" and alone.hits[0].item_id == reference
    with pytest.raises(SearchError, match=r"does not answer text queries; it answers \['image', 'image\+text'\]"):
        searcher.search(text="red dress")


def test_add_items_and_duplicates(setup, tmp_path):
    from fashion_bench.search.build import add, build
    from fashion_bench.search.index import IndexPolicy
    from fashion_bench.search.searcher import Searcher
    from fashion_bench.search.store import IndexDirError

    out = tmp_path / "index"
    policy = IndexPolicy(flat_below=70)  # 60 items: flat; 80 after adding: re-selected as HNSW
    build(setup["clip"], setup["first"], out, policy=policy, progress=False)
    info = add(out, setup["more"], policy=policy, progress=False)
    assert info["count"] == N_BUILD + N_ADD and info["kind"] == "hnsw" and len(info["catalogues"]) == 2
    searcher = Searcher.load(out)
    new = searcher._contents.items[-1]
    assert searcher.search(reference=new.item_id, k=1)[0].item_id == new.item_id
    with pytest.raises(IndexDirError, match=rf"{N_ADD} item id\(s\) already in the index"):
        add(out, setup["more"], policy=policy, progress=False)


@pytest.mark.parametrize("policy,kind,depth", [({"flat_below": 10}, "hnsw", "efSearch"),
                                               ({"flat_below": 10, "hnsw_below": 20}, "ivf", "nprobe")])
def test_approximate_index_recall(setup, tmp_path, policy, kind, depth):
    from fashion_bench.search.build import build
    from fashion_bench.search.index import IndexPolicy
    from fashion_bench.search.searcher import Searcher

    info = build(setup["clip"], setup["first"], tmp_path / kind, policy=IndexPolicy(**policy), progress=False)
    assert info["kind"] == kind and depth in info["params"] and info["params"]["recall_queries"] > 0
    assert 0.9 <= info["recall_at_10"] <= 1.0
    searcher = Searcher.load(tmp_path / kind)
    item = searcher._contents.items[7]
    assert searcher.search(reference=item.item_id, k=5)[0].item_id == item.item_id


def test_index_choice_by_size():
    from fashion_bench.search.index import IndexPolicy

    policy = IndexPolicy()
    assert [policy.kind(n, 512) for n in (99_999, 100_000, 1_999_999, 2_000_000)] == ["flat", "hnsw", "hnsw", "ivf"]
    assert IndexPolicy(memory_budget=1 << 30).kind(1_000_000, 512) == "ivf"


def test_cli(setup, tmp_path, capsys):
    from fashion_bench.cli import main

    out = tmp_path / "index"
    assert main(["index", "--run", str(setup["clip"]), "--catalogue", str(setup["first"]), "--out", str(out)]) == 0
    assert "60 items" in capsys.readouterr().out
    assert main(["index", "--run", str(setup["clip"]), "--catalogue", str(setup["first"]), "--out", str(out)]) == 2
    assert "already holds an index" in capsys.readouterr().err
    assert main(["search", "--index", str(out), "--text", "red striped dress", "-k", "4"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["rank", "score", "item"] and len(table) == 5
    item = json.loads((out / "items.jsonl").read_text().splitlines()[2])
    assert main(["search", "--index", str(out), "--image", item["image"], "--text", "in blue", "--json", "-k", "3"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["query"]["kind"] == "image+text" and len(payload["hits"]) == 3
    assert payload["index"]["checkpoint_sha256"] == sha256(setup["clip"])
    page = tmp_path / "out.html"
    assert main(["search", "--index", str(out), "--reference", item["item_id"], "--html", str(page)]) == 0
    html = page.read_text()
    assert html.count("data:image/jpeg;base64,") == 20 and item["item_id"] in html
    for argv, message in [
        (["--index", str(tmp_path / "missing"), "--text", "x"], "not an index directory"),
        (["--index", str(out), "--text", ""], "empty query"),
        (["--index", str(out), "--image", str(tmp_path / "nope.jpg")], "query image not found"),
        (["--index", str(out), "--image", str(setup["first"])], "not a readable image"),
    ]:
        assert main(["search", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1

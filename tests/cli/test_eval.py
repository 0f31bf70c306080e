"""``fashion-bench eval`` on a catalogue it has never seen: a local weights file, a trained run directory, the
fashion encoder configs offline, and how ``--model`` / ``--columns`` are read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from fashion_bench.retrieval.results import missing_fields

REPO = Path(__file__).resolve().parents[2]
COLUMNS = "image=img_path,text=title,identity=sku"


def make_shop(root: Path, n: int = 6) -> Path:
    """A shop export: two photos per product, its title and SKU, columns named the shop's way."""
    (root / "img").mkdir(parents=True)
    lines = ["img_path,title,sku"]
    for k in range(n):
        for v in range(2):
            Image.new("RGB", (32, 32), (40 * k, 100 * v, 0)).save(root / "img" / f"{k}-{v}.png")
            lines.append(f"img/{k}-{v}.png,dress number {k},SKU{k}")
    (root / "shop.csv").write_text("\n".join(lines) + "\n")
    return root / "shop.csv"


def fashion_bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "fashion_bench.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory, tiny_encoder) -> Path:
    from fashion_bench.encoders import export_open_clip_checkpoint

    return export_open_clip_checkpoint(tiny_encoder, tmp_path_factory.mktemp("weights") / "tiny.pt")


def test_eval_local_weights_file_writes_results_and_prints_a_table(tmp_path, tiny_file):
    shop = make_shop(tmp_path / "shop")
    out = fashion_bench("eval", "--model", str(tiny_file), "--catalogue", str(shop), "--columns", COLUMNS,
                        "--split", "all", "--out", str(tmp_path / "runs"), "--num-workers", "0", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    results_path = next((tmp_path / "runs").glob("eval-tiny.pt__shop/*/results.json"))
    results = json.loads(results_path.read_text())
    assert not missing_fields(results)
    assert (results["method"], results["dataset"], results["task"], results["split"]) == ("clip", "catalogue", "t2i", "all")
    assert results["num_queries"] == 6 and results["gallery_size"] == 12 and results["encoder"]["pretrained"] == str(tiny_file)
    assert results_path.with_name("per_query.jsonl").is_file()
    assert "R@10" in out.stdout and f"results: {results_path}" in out.stdout


def test_eval_trained_run_uses_its_method(tmp_path, tiny_world, tiny_file):
    """A run directory: its config.yaml rebuilds the method, its published model.ckpt gives the weights."""
    from fashion_bench.evaluate import main
    from fashion_bench.lightning_cli import run

    runs = tmp_path / "runs"
    run(["fit", "--config", str(REPO / "configs/experiment/clip__synth-id.yaml"), "--data.root", str(tiny_world.parent),
         "--data.synthetic_preset", "tiny", "--data.num_workers", "0", "--data.pk_identities", "4", "--data.pk_instances", "2",
         "--model.init_args.encoder.pretrained", str(tiny_file), "--trainer.max_steps", "2", "--trainer.max_epochs", "1",
         "--trainer.default_root_dir", str(runs), "--trainer.enable_progress_bar", "false"])
    run_dir = next((runs / "clip__synth-id").glob("*_seed0"))
    shop = make_shop(tmp_path / "shop")
    assert main(["--model", str(run_dir), "--catalogue", str(shop), "--columns", COLUMNS, "--task", "id", "--split", "all",
                 "--out", str(runs), "--num-workers", "0", "--device", "cpu"]) == 0
    results = json.loads(next(runs.glob("eval-*__shop/*/results.json")).read_text())
    assert results["task"] == "id" and results["protocol"]["name"] == "id" and results["num_queries"] == 12
    assert Path(results["ckpt_path"]).parent == run_dir / "checkpoints"


@pytest.mark.parametrize("config", ["marqo-fashionclip", "marqo-fashionsiglip", "fashionclip-2"])
def test_fashion_encoder_configs_fail_offline_with_the_clear_message(config, monkeypatch, tmp_path):
    """Offline without the weights, each config stops while building the encoder, saying what to pass instead."""
    from fashion_bench.encoders.clip import PretrainedUnavailableError
    from fashion_bench.methods.base import EncoderConfig

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    encoder = yaml.safe_load((REPO / "configs" / "encoder" / f"{config}.yaml").read_text())
    with pytest.raises(PretrainedUnavailableError, match=r"local weights file|checkpoint file not found: weights/fashion-clip-2\.0"):
        EncoderConfig(**encoder).build()


def test_model_argument_forms(tmp_path, tiny_file):
    from fashion_bench.evaluate import model_args, parse_columns

    assert model_args("ViT-B-32:laion2b_s34b_b79k", None)[-3:] == ["ViT-B-32", "--model.init_args.encoder.pretrained", "laion2b_s34b_b79k"]
    assert model_args("hf-hub:Marqo/marqo-fashionCLIP", "w.bin")[-3:] == ["hf-hub:Marqo/marqo-fashionCLIP", "--model.init_args.encoder.pretrained", "w.bin"]
    assert model_args(str(REPO / "configs/encoder/marqo-fashionsiglip.yaml"), None)[-1] == "null"
    assert model_args(str(tiny_file), None)[3] == "tiny-vit-64"  # an export records its architecture
    assert parse_columns("image=img, text=title+description") == {"image": "img", "text": ["title", "description"]}
    with pytest.raises(ValueError, match=r"--columns: expected field=column pairs"):
        parse_columns("image")
    with pytest.raises(FileNotFoundError, match=r"needs checkpoints/best-\*\.ckpt"):
        model_args(str(tmp_path), None)

"""``fashion-bench data verify``: counts per split, absent splits, malformed records, missing and unreadable
images (header check, full decode with --decode), the skip switch, and that it stays light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from fashion_bench.data.cli import main

REPO = Path(__file__).resolve().parents[2]
SHOES_CONFIG = str(REPO / "configs" / "data" / "shoes.yaml")
TRAIN, EVAL = ["img_womens_boots_1.jpg", "img_womens_boots_2.jpg"], ["img_womens_pumps_1.jpg", "img_womens_pumps_2.jpg"]


@pytest.fixture
def shoes(tmp_path):
    """A Shoes folder: one train and one test triplet, four 8 x 8 JPEGs."""
    root = tmp_path / "shoes"
    (root / "images").mkdir(parents=True)
    for n, name in enumerate(TRAIN + EVAL):
        Image.new("RGB", (8, 8), (40 * n, 90, 200)).save(root / "images" / name)
    (root / "train_im_names.txt").write_text("\n".join(TRAIN) + "\n")
    (root / "eval_im_names.txt").write_text("\n".join(EVAL) + "\n")
    records = [{"ImageName": t, "ReferenceImageName": r, "RelativeCaption": "is darker"} for r, t in (TRAIN, EVAL)]
    (root / "relative_captions_shoes.json").write_text(json.dumps(records))
    return root


def verify(capsys, *args: str) -> tuple[int, str]:
    code = main(["verify", "--quiet", *args])
    return code, capsys.readouterr().out


def test_counts_per_split(shoes, capsys):
    code, out = verify(capsys, "--config", SHOES_CONFIG, "--data.root", str(shoes))
    assert code == 0
    assert "dataset 'shoes' (task cir, protocol shoes)" in out
    assert "split 'train' (train): 1 training triplets, gallery 2 images, 2 images in all" in out
    assert "split 'test' (val, test): 1 queries (1 with targets), gallery 2 images" in out
    assert "images: all 4 distinct images present with a readable header" in out and out.strip().endswith("ok: 0 errors, 0 warnings")


def test_experiment_config_and_absent_split(shoes, capsys):
    config = str(REPO / "configs" / "experiment" / "clip__shoes.yaml")
    code, out = verify(capsys, "--config", config, f"--data.root={shoes}", "--data.test_split", "extra")
    assert code == 0
    assert "split 'extra' (test): not present" in out and "split 'test' (val): 1 queries" in out


def test_missing_image_is_an_error_unless_skipped(shoes, capsys):
    (shoes / "images" / EVAL[1]).unlink()
    code, out = verify(capsys, "--config", SHOES_CONFIG, "--data.root", str(shoes))
    assert code == 1
    assert "1 missing images:" in out and f"split 'test' item '{EVAL[1]}': " in out and "not found" in out
    code, out = verify(capsys, "--config", SHOES_CONFIG, "--data.root", str(shoes), "--data.skip_missing_images", "true")
    assert code == 0 and "1 missing images:" in out and "0 errors, 1 warnings" in out


def test_unreadable_and_truncated_images(shoes, capsys):
    (shoes / "images" / TRAIN[0]).write_bytes(b"not an image")
    code, out = verify(capsys, "--config", SHOES_CONFIG, "--data.root", str(shoes))
    assert code == 1 and "1 unreadable images:" in out and f"item '{TRAIN[0]}'" in out
    Image.effect_noise((128, 128), 60).convert("RGB").save(shoes / "images" / TRAIN[0])  # ~10 KB, header < 1 KB
    data = (shoes / "images" / TRAIN[0]).read_bytes()
    (shoes / "images" / TRAIN[0]).write_bytes(data[: len(data) // 2])
    assert verify(capsys, "--config", SHOES_CONFIG, "--data.root", str(shoes))[0] == 0  # the header is intact
    code, out = verify(capsys, "--config", SHOES_CONFIG, "--data.root", str(shoes), "--decode")
    assert code == 1 and "1 unreadable images:" in out and "corrupt or unreadable image" in out


def test_malformed_record_named(shoes, capsys):
    (shoes / "relative_captions_shoes.json").write_text(json.dumps([{"ImageName": EVAL[1], "RelativeCaption": "x"}]))
    code, out = verify(capsys, "--config", SHOES_CONFIG, "--data.root", str(shoes))
    assert code == 1
    assert "relative_captions_shoes.json record 0: missing key 'ReferenceImageName'" in out and "FAILED" in out


def test_bad_arguments(shoes, capsys):
    assert main(["verify", "--config", SHOES_CONFIG, "--data.root"]) == 2
    assert main(["verify", "--config", SHOES_CONFIG, "--root", str(shoes)]) == 2
    code, out = verify(capsys, "--config", SHOES_CONFIG, "--data.root", str(shoes), "--data.adapter_args", "{bogus: 1}")
    assert code == 1 and "does not take adapter_args ['bogus']" in out


def test_synthetic_dataset(tiny_world, capsys):
    config = str(REPO / "configs" / "data" / "synth-cir.yaml")
    code, out = verify(capsys, "--config", config, "--data.root", str(tiny_world.parent), "--data.synthetic_preset", "tiny")
    assert code == 0 and "split 'val' (val):" in out and "training triplets" in out


def test_stays_light(shoes):
    code = (
        "import sys; from fashion_bench.cli import main; "
        f"code = main(['data', 'verify', '--quiet', '--config', {SHOES_CONFIG!r}, '--data.root', {str(shoes)!r}]); "
        "print(code, 'torch' in sys.modules, 'lightning' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "0 False False"

"""The errors a user meets first, through the real CLI: our message alone on stderr, a non-zero exit, the
traceback in the run's error.log (and with --verbose on stderr)."""

from __future__ import annotations

from pathlib import Path

from test_eval import COLUMNS, fashion_bench, make_shop

REPO = Path(__file__).resolve().parents[2]


def only_message(out, command: str, pattern: str) -> Path:
    """stderr is exactly one line: our message and where its traceback went."""
    import re

    assert out.returncode == 1, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fashion-bench {command}: error: "), out.stderr[-3000:]
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in out.stderr and "Union subtypes" not in out.stderr
    log = Path(re.search(r"\(traceback: (.+?); --verbose prints it\)$", lines[0]).group(1))
    assert "Traceback" in log.read_text()
    return log


def test_missing_data_root(tmp_path):
    args = ["validate", "--config", str(REPO / "configs/experiment/clip__synth-t2i.yaml"), "--data.dataset", "kagl",
            "--data.root", str(tmp_path / "nowhere"), "--model.init_args.encoder.pretrained", "null",
            "--trainer.default_root_dir", str(tmp_path / "runs")]
    log = only_message(fashion_bench(*args, cwd=tmp_path), "validate", r"nowhere: no styles\.csv")
    assert log.parent.parent.parent == tmp_path / "runs"  # the run's own error.log
    verbose = fashion_bench(*args, "--verbose", cwd=tmp_path)
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr


def test_unavailable_weights(tmp_path):
    shop = make_shop(tmp_path / "shop")
    out = fashion_bench("eval", "--model", "ViT-B-32:laion2b_s34b_b79k", "--catalogue", str(shop), "--columns", COLUMNS,
                        "--out", str(tmp_path / "runs"), cwd=tmp_path)
    only_message(out, "eval", r"--model ViT-B-32:laion2b_s34b_b79k: the weights are not in the .* Pass a local weights file: "
                 r"fashion-bench eval --model <open_clip architecture, e\.g\. ViT-B-32> --pretrained ")


def test_unknown_catalogue_column(tmp_path):
    shop = make_shop(tmp_path / "shop")
    out = fashion_bench("eval", "--model", "tiny-vit-64", "--catalogue", str(shop), "--columns", "image=img_path,text=name",
                        "--out", str(tmp_path / "runs"), cwd=tmp_path)
    only_message(out, "eval", r"shop\.csv: column 'name' \(for field 'text'\) is not in the catalogue; its columns are \['img_path', 'title', 'sku'\]")


def test_missing_image(tmp_path):
    shop = make_shop(tmp_path / "shop")
    (shop.parent / "img" / "1-0.png").unlink()
    out = fashion_bench("eval", "--model", "tiny-vit-64", "--catalogue", str(shop), "--columns", COLUMNS,
                        "--out", str(tmp_path / "runs"), cwd=tmp_path)
    only_message(out, "eval", r"1 of 12 catalogue images are missing: .*shop\.csv:4: item 'img/1-0\.png' image 'img/1-0\.png' not found")

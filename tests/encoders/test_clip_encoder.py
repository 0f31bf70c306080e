"""ClipEncoder weights and preprocessing, offline, against a locally built Hugging Face hub cache.

The fake cache has the layout huggingface_hub reads offline: ``models--local--tiny-clip/refs/main`` holding a
revision and ``models--local--tiny-clip/snapshots/<revision>/`` holding ``open_clip_config.json`` (the shipped
tiny architecture plus a ``preprocess_cfg``) and, optionally, the repository's own weights.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fashion_bench.encoders import (
    ClipEncoder,
    PretrainedUnavailableError,
    WeightsFileError,
    export_open_clip_checkpoint,
)
from fashion_bench.encoders.clip import MODEL_CONFIG_DIR

HUB_MODEL = "hf-hub:local/tiny-clip"
REVISION = "0123456789abcdef0123456789abcdef01234567"
SIGLIP_STYLE = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bilinear", "resize_mode": "squash"}


def make_hub_cache(cache: Path, *, preprocess: dict | None = None, weights: dict | None = None) -> Path:
    """A Hugging Face cache holding ``local/tiny-clip`` (config, and the hub weights when given)."""
    repo = cache / "models--local--tiny-clip"
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    model_cfg = json.loads((MODEL_CONFIG_DIR / "tiny-vit-64.json").read_text())
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess or {}}
    (snapshot / "open_clip_config.json").write_text(json.dumps(config))
    if weights is not None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in weights.items()}, str(snapshot / "open_clip_model.safetensors"))
    return cache


def random_weights(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in ClipEncoder("tiny-vit-64").clip.state_dict().items()}


def assert_weights_equal(encoder: ClipEncoder, expected: dict[str, torch.Tensor]) -> None:
    actual = encoder.clip.state_dict()
    assert set(actual) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, rtol=0, atol=0, msg=key)


@pytest.fixture(scope="module")
def hub_weights() -> dict[str, torch.Tensor]:
    return random_weights(1)


@pytest.fixture(scope="module")
def file_weights() -> dict[str, torch.Tensor]:
    return random_weights(2)


def save_weights(weights: dict[str, torch.Tensor], path: Path) -> Path:
    """The formats a user brings: open_clip-style .bin / .pt state dicts and .safetensors."""
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(weights, str(path))
    else:
        torch.save(weights, path)
    return path


@pytest.mark.parametrize("name", ["weights.bin", "weights.pt", "weights.safetensors"])
def test_hub_model_with_local_file_loads_that_file(tmp_path, hub_weights, file_weights, name):
    cache = make_hub_cache(tmp_path / "hub", weights=hub_weights)
    path = save_weights(file_weights, tmp_path / name)
    encoder = ClipEncoder(HUB_MODEL, pretrained=str(path), cache_dir=str(cache))
    assert_weights_equal(encoder, file_weights)
    assert encoder.weights == str(path)


def test_hub_model_with_exported_file_needs_no_hub_weights(tmp_path, file_weights):
    """Only the config is cached: the architecture comes from it, the weights from the export."""
    source = ClipEncoder("tiny-vit-64")
    source.clip.load_state_dict(file_weights)
    path = export_open_clip_checkpoint(source, tmp_path / "export.pt")
    encoder = ClipEncoder(HUB_MODEL, pretrained=str(path), cache_dir=str(make_hub_cache(tmp_path / "hub")))
    assert_weights_equal(encoder, file_weights)


def test_a_local_weights_file_is_not_announced_as_a_random_init(tmp_path, file_weights, caplog):
    """open_clip warns "initialized randomly" while building the architecture; the file's weights come next."""
    path = save_weights(file_weights, tmp_path / "weights.pt")
    with caplog.at_level(logging.WARNING):
        encoder = ClipEncoder("tiny-vit-64", pretrained=str(path))
        assert_weights_equal(encoder, file_weights)
        assert "initialized randomly" not in caplog.text
        ClipEncoder("tiny-vit-64")  # no weights at all: the warning stays
    assert "initialized randomly" in caplog.text


def test_a_weights_file_given_as_the_model_is_explained(tmp_path, file_weights):
    path = save_weights(file_weights, tmp_path / "weights.pt")
    with pytest.raises(ValueError, match=rf"unknown encoder model .*looks like a weights file.*pretrained: {path}"):
        ClipEncoder(str(path))


def test_hub_model_alone_loads_the_hub_weights(tmp_path, hub_weights):
    encoder = ClipEncoder(HUB_MODEL, cache_dir=str(make_hub_cache(tmp_path / "hub", weights=hub_weights)))
    assert_weights_equal(encoder, hub_weights)
    assert encoder.weights == HUB_MODEL and encoder.pretrained is None


def test_hub_model_alone_without_cached_weights_is_not_random(tmp_path):
    message = "cannot load model 'hf-hub:local/tiny-clip' with its hub weights"
    with pytest.raises(PretrainedUnavailableError, match=message):
        ClipEncoder(HUB_MODEL, cache_dir=str(make_hub_cache(tmp_path / "hub")))


def test_hub_config_not_cached_offline_is_a_clear_error(tmp_path, file_weights):
    path = save_weights(file_weights, tmp_path / "weights.bin")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PretrainedUnavailableError) as info:
        ClipEncoder(HUB_MODEL, pretrained=str(path), cache_dir=str(tmp_path / "empty"))
    message = str(info.value)
    assert "hf-hub:local/tiny-clip" in message and "open_clip_config.json is not in the Hugging Face cache" in message
    assert "HF_HUB_OFFLINE=1" in message


def test_hub_model_refuses_a_pretrained_tag(tmp_path):
    with pytest.raises(ValueError, match="not the pretrained tag 'laion2b_s34b_b79k'"):
        ClipEncoder(HUB_MODEL, pretrained="laion2b_s34b_b79k", cache_dir=str(make_hub_cache(tmp_path / "hub")))


def test_wrong_architecture_file_is_refused_naming_it(tmp_path):
    path = export_open_clip_checkpoint(ClipEncoder("small-vit-96"), tmp_path / "small.pt")
    cache = str(make_hub_cache(tmp_path / "hub"))
    for model in (HUB_MODEL, "tiny-vit-64"):
        with pytest.raises(WeightsFileError) as info:
            ClipEncoder(model, pretrained=str(path), cache_dir=cache)
        message = str(info.value)
        assert str(path) in message and f"model '{model}'" in message
        assert "records model 'small-vit-96'" in message and "size mismatch" in message


def test_missing_and_unexpected_keys_are_listed(tmp_path, file_weights):
    weights = dict(file_weights)
    weights["visual.extra_head.weight"] = weights.pop("text_projection")
    path = save_weights(weights, tmp_path / "renamed.bin")
    with pytest.raises(WeightsFileError) as info:
        ClipEncoder(HUB_MODEL, pretrained=str(path), cache_dir=str(make_hub_cache(tmp_path / "hub")))
    message = str(info.value)
    assert "1 missing keys (text_projection)" in message
    assert "1 unexpected keys (visual.extra_head.weight)" in message


@pytest.mark.parametrize("name", ["broken.pt", "broken.safetensors"])
def test_unreadable_file_is_refused(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsFileError, match=f"cannot read pretrained file {path} for model 'tiny-vit-64'"):
        ClipEncoder("tiny-vit-64", pretrained=str(path))


def test_lightning_checkpoint_with_prefixed_keys_loads(tmp_path, file_weights):
    """A fashion-bench Lightning checkpoint holds the CLIP under ``encoder.clip.`` beside other state."""
    state = {f"encoder.clip.{k}": v for k, v in file_weights.items()} | {"head.weight": torch.zeros(2)}
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "epoch": 3, "global_step": 10}, path)
    cache = str(make_hub_cache(tmp_path / "hub"))
    assert_weights_equal(ClipEncoder(HUB_MODEL, pretrained=str(path), cache_dir=cache), file_weights)
    assert_weights_equal(ClipEncoder("tiny-vit-64", pretrained=str(path)), file_weights)


def test_checkpoint_with_several_clips_is_refused(tmp_path, file_weights):
    state = {f"encoders.{i}.clip.{k}": v for i in range(2) for k, v in file_weights.items()}
    path = tmp_path / "ensemble.ckpt"
    torch.save({"state_dict": state}, path)
    prefixes = r"several models under the prefixes \['encoders.0.clip.', 'encoders.1.clip.'\]"
    with pytest.raises(WeightsFileError, match=prefixes):
        ClipEncoder("tiny-vit-64", pretrained=str(path))


def test_hub_preprocess_cfg_sets_the_transform(tmp_path):
    """A SigLIP-style config (mean 0.5, bilinear, squash) gets its own transform, not CLIP's."""
    cache = make_hub_cache(tmp_path / "hub", preprocess=SIGLIP_STYLE, weights=random_weights(3))
    encoder = ClipEncoder(HUB_MODEL, cache_dir=str(cache))
    spec = encoder.image_spec
    assert (spec.mean, spec.std) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert (spec.interpolation, spec.resize_mode, spec.size) == ("bilinear", "squash", 64)
    image = Image.linear_gradient("L").convert("RGB").resize((40, 100))
    expected = torch.from_numpy(np.asarray(image.resize((64, 64), Image.BILINEAR))).permute(2, 0, 1)
    torch.testing.assert_close(encoder.image_transform()(image), expected.float() / 255 * 2 - 1)


def test_default_preprocessing_is_open_clip_s(tiny_encoder):
    spec = tiny_encoder.image_spec
    assert (spec.interpolation, spec.resize_mode) == ("bicubic", "shortest")
    assert spec.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))


def test_hub_cache_from_the_environment(tmp_path, hub_weights):
    """Without ``cache_dir`` the cache is HF_HUB_CACHE's (read by huggingface_hub at import: a fresh process)."""
    cache = make_hub_cache(tmp_path / "hub", weights=hub_weights)
    code = (
        "import fashion_bench, torch\n"
        "from fashion_bench.encoders import ClipEncoder\n"
        f"print(float(ClipEncoder('{HUB_MODEL}').clip.text_projection.sum()))\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.split()[-1]) == pytest.approx(float(hub_weights["text_projection"].sum()), rel=1e-6)

import torch
import pytest

from fashion_bench.encoders import ClipEncoder, PretrainedUnavailableError, export_open_clip_checkpoint


def test_features_are_normalised_and_shaped(tiny_encoder):
    images = torch.randn(3, 3, 64, 64)
    tokens = tiny_encoder.tokenize(["a red shirt", "blue jeans", "white sneakers"])
    assert tokens.shape == (3, tiny_encoder.context_length)
    img, txt = tiny_encoder.encode_image(images), tiny_encoder.encode_text(tokens)
    assert img.shape == txt.shape == (3, tiny_encoder.embed_dim)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(3))


def test_local_checkpoint_roundtrip(tiny_encoder, tmp_path):
    """The open_clip-loadable export loads back through `pretrained=<file>` with identical outputs."""
    path = export_open_clip_checkpoint(tiny_encoder, tmp_path / "w" / "enc.pt")
    loaded = ClipEncoder("tiny-vit-64", pretrained=str(path))
    images = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded.encode_image(images), tiny_encoder.encode_image(images))
    state = torch.load(path, weights_only=True)
    assert "state_dict" in state


def test_freezing_switches():
    enc = ClipEncoder("tiny-vit-64", freeze_image=True)
    assert not any(p.requires_grad for p in enc.image_parameters())
    assert all(p.requires_grad for p in enc.text_parameters())
    enc.set_frozen(image=False, text=True)
    assert all(p.requires_grad for p in enc.image_parameters())
    assert not any(p.requires_grad for p in enc.text_parameters())


def test_transform_matches_encoder_size(tiny_encoder):
    from PIL import Image

    out = tiny_encoder.image_transform(target_pad_ratio=1.25)(Image.new("RGB", (40, 100), "red"))
    assert out.shape == (3, 64, 64)


@pytest.mark.parametrize(
    "model, pretrained, error, text",
    [
        ("ViT-B-32", "laion2b_s34b_b79k", PretrainedUnavailableError, "local checkpoint file"),
        ("hf-hub:Marqo/marqo-fashionCLIP", None, PretrainedUnavailableError, "offline"),
        ("tiny-vit-64", "/does/not/exist.pt", PretrainedUnavailableError, "checkpoint file not found"),
        ("no-such-model", None, ValueError, "unknown encoder model 'no-such-model'"),
    ],
)
def test_unavailable_weights_say_why(model, pretrained, error, text):
    with pytest.raises(error, match=text):
        ClipEncoder(model, pretrained=pretrained)


def test_encoder_config_reads_a_null_flag_as_no_weights():
    """`--model.init_args.encoder.pretrained null` arrives as the string "None" from the CLI parser."""
    from fashion_bench.methods.base import EncoderConfig

    assert EncoderConfig(pretrained="None").pretrained is None
    assert EncoderConfig(pretrained="null", cache_dir="").cache_dir is None
    assert EncoderConfig(pretrained="weights/x.pt").pretrained == "weights/x.pt"

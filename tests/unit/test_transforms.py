import io

import pytest
from PIL import Image

from fashion_bench.data.schema import DataError
from fashion_bench.data.transforms import TargetPad, decode_image


def test_targetpad_pads_only_elongated_images():
    pad = TargetPad(1.25)
    assert pad(Image.new("RGB", (100, 110))).size == (100, 110)  # ratio 1.1: untouched
    assert pad(Image.new("RGB", (100, 200))).size == (200, 200)  # ratio 2.0: padded square
    with pytest.raises(ValueError, match="ratio must be >= 1"):
        TargetPad(0.5)


def test_decode_jpeg_with_draft(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (400, 533), "blue").save(path)
    image = decode_image(path, target_size=64)
    assert image.mode == "RGB" and min(image.size) >= 128  # draft keeps at least twice the target


def test_missing_and_corrupt_images_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.png: image file not found"):
        decode_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="bad.jpg: corrupt or unreadable image"):
        decode_image(bad)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    assert decode_image(buf.getvalue()).size == (8, 8)

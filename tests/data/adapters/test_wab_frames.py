"""``fashion-bench data wab-frames``: annotated frames decoded with PyAV, resumable, failures reported."""

from __future__ import annotations

import json

import pytest
from _fixtures_t2i_id import COLOURS, write_video, write_wab_part
from PIL import Image

from fashion_bench.data.cli import main
from fashion_bench.data.schema import DataError
from fashion_bench.data.wab_frames import extract_frames, extract_video


def test_extracts_the_annotated_frames_with_their_pixels(tmp_path, capsys):
    write_wab_part(tmp_path, "val_part1", [3, 4])
    assert main(["wab-frames", "--root", str(tmp_path), "--quiet"]) == 0
    assert "2 videos: 6 frames written, 0 already present" in capsys.readouterr().out
    for video in ("video3", "video4"):
        files = sorted(p.name for p in (tmp_path / "frames" / "val_part1" / video).iterdir())
        assert files == ["0.jpg", "2.jpg", "4.jpg"]
        for index in (0, 2, 4):
            image = Image.open(tmp_path / "frames" / "val_part1" / video / f"{index}.jpg")
            assert image.size == (64, 64)
            assert image.getpixel((32, 32)) == pytest.approx(COLOURS[index], abs=8)
    assert main(["wab-frames", "--root", str(tmp_path), "--quiet"]) == 0
    assert "0 frames written, 6 already present" in capsys.readouterr().out


def test_out_folder(tmp_path):
    write_wab_part(tmp_path / "wab", "train_part1", [1])
    counts = extract_frames(tmp_path / "wab", tmp_path / "elsewhere", progress=False)
    assert counts["frames_written"] == 3 and not counts["failed"]
    assert (tmp_path / "elsewhere" / "train_part1" / "video1" / "4.jpg").exists()


def test_bad_videos_are_reported_and_the_rest_extracted(tmp_path, capsys):
    part = write_wab_part(tmp_path, "val_part1", [3, 4, 5])
    annotation = part / "video_annotation" / "video3.json"
    record = json.loads(annotation.read_text())
    record["frames"].append({"frame_index": 40, "annotations": []})
    annotation.write_text(json.dumps(record))
    (part / "video" / "video4.mp4").write_bytes(b"not a video")
    (part / "video" / "video5.mp4").unlink()
    assert main(["wab-frames", "--root", str(tmp_path), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "3 videos failed" in captured.out
    assert "video3.json: " in captured.err and "video3.mp4 has 5 frames; annotated frames [40] are beyond its end" in captured.err
    assert "video4.json: corrupt or unreadable video" in captured.err
    assert "video5.json: video file" in captured.err and "video5.mp4 not found" in captured.err
    assert (tmp_path / "frames" / "val_part1" / "video3" / "4.jpg").exists()  # frames before the end were written


def test_extract_video_directly(tmp_path):
    video = write_video(tmp_path / "v.mp4", COLOURS[:3])
    assert extract_video(video, {1: tmp_path / "one.jpg"}) == 1
    assert Image.open(tmp_path / "one.jpg").getpixel((5, 5)) == pytest.approx(COLOURS[1], abs=8)
    with pytest.raises(DataError, match=r"v.mp4 has 3 frames; annotated frames \[7\] are beyond its end"):
        extract_video(video, {7: tmp_path / "seven.jpg"})


def test_not_a_wab_folder(tmp_path, capsys):
    assert main(["wab-frames", "--root", str(tmp_path), "--quiet"]) == 2
    assert "no WAB part folder" in capsys.readouterr().err

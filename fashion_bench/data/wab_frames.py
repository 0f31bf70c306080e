"""``fashion-bench data wab-frames``: extract WAB's annotated video frames once, before training.

For every part and every ``video_annotation/<video_id>.json``, the frames it annotates are decoded from
``video/<video_id>.mp4`` (PyAV; frames counted in decoding order from 0, stopping after the last annotated
one) and written to ``<out>/<part>/<video_id>/<frame_index>.jpg``, where the ``wab`` adapter reads them. Frames
already written are kept, so an interrupted run resumes. A missing, corrupt or too short video does not stop
the run: it is reported with its file and the frames it lacks, and the command exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fashion_bench.atomic import atomic_open
from fashion_bench.data.schema import DataError


def extract_video(video: Path, wanted: dict[int, Path], *, quality: int = 95, where: str = "") -> int:
    """Write the frames ``wanted`` (frame index -> output file) of one video; returns how many were written."""
    import av

    label = where or str(video)
    if not video.exists():
        raise DataError(f"{label}: video file {video} not found")
    last, written, decoded = max(wanted), 0, 0
    try:
        with av.open(str(video)) as container:
            if not container.streams.video:
                raise DataError(f"{label}: {video} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                decoded = index + 1
                if index in wanted:
                    _save(frame.to_image(), wanted[index], quality)
                    written += 1
                if index >= last:
                    break
    except av.error.FFmpegError as err:
        raise DataError(f"{label}: corrupt or unreadable video {video} ({err})") from None
    if written < len(wanted):
        beyond = sorted(i for i in wanted if i >= decoded)
        raise DataError(f"{label}: {video} has {decoded} frames; annotated frames {beyond[:5]} are beyond its end")
    return written


def _save(image, path: Path, quality: int) -> None:
    with atomic_open(path, "wb") as fh:
        image.convert("RGB").save(fh, format="JPEG", quality=quality)


def extract_frames(root: Path, out: Path, *, quality: int = 95, overwrite: bool = False, progress: bool = True) -> dict:
    """Extract every part's annotated frames; returns counts and the list of failures (messages)."""
    from tqdm import tqdm

    from fashion_bench.data.adapters.wab import find_parts, frame_path, video_frames

    parts = find_parts(root)
    if not parts:
        raise DataError(f"{root}: no WAB part folder (with image_annotation/ or video_annotation/) found")
    annotations = [(part, path) for part in parts for path in sorted((part / "video_annotation").glob("*.json"))]
    counts = {"videos": 0, "frames_written": 0, "frames_present": 0, "failed": []}
    for part, path in tqdm(annotations, desc="wab frames", unit="video", disable=not progress):
        try:
            video_id, frames = video_frames(path)
            targets = {index: frame_path(out, part.name, video_id, index) for index, _ in frames}
            wanted = {i: p for i, p in targets.items() if overwrite or not p.exists()}
            counts["frames_present"] += len(targets) - len(wanted)
            if wanted:
                counts["frames_written"] += extract_video(part / "video" / f"{video_id}.mp4", wanted, quality=quality, where=str(path))
            counts["videos"] += 1
        except DataError as err:
            counts["failed"].append(str(err))
    return counts


def _run(args: argparse.Namespace) -> int:
    root = Path(args.root).expanduser()
    out = Path(args.out).expanduser() if args.out else root / "frames"
    try:
        counts = extract_frames(root, out, quality=args.quality, overwrite=args.overwrite, progress=not args.quiet)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = counts["failed"]
    print(
        f"{counts['videos']} videos: {counts['frames_written']} frames written, {counts['frames_present']} already "
        f"present, under {out}; {len(failed)} videos failed"
    )
    for message in failed[:20]:
        print(f"  {message}", file=sys.stderr)
    if len(failed) > 20:
        print(f"  ... and {len(failed) - 20} more", file=sys.stderr)
    return 1 if failed else 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("wab-frames", help="extract the annotated frames of WAB's videos (once)")
    parser.add_argument("--root", required=True, help="the WAB folder (its parts, or one part)")
    parser.add_argument("--out", default=None, help="frames folder (default: <root>/frames, where the adapter looks)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality (default: 95)")
    parser.add_argument("--overwrite", action="store_true", help="rewrite frames that already exist")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run)

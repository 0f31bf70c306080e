"""WAB, Taobao Live "Watch and Buy" (instance retrieval, video-to-shop).

The release comes in parts (folders), each with::

    image/<item_id>/<n>.jpg                 shop images
    image_annotation/<item_id>/<n>.json     {"item_id", "img_name", "annotations": [{"label", "viewpoint",
                                             "display", "instance_id", "box": [x1, y1, x2, y2]}]}
    video/<video_id>.mp4                    live-stream clips
    video_annotation/<video_id>.json        {"video_id", "frames": [{"frame_index", "annotations": [...]}]}
    image_text/<item_id>.txt, video_text/<video_id>.txt   titles / speech text (optional)

Every box with ``instance_id > 0`` (the product on sale; 0 marks other garments) is an item: a crop of its
shop image (domain ``shop``) or video frame (domain ``live``), referenced as ``<image>#crop=x1,y1,x2,y2`` and
cropped when decoded. Frames are read from ``<frames_root>/<part>/<video_id>/<frame_index>.jpg``, written once
by ``fashion-bench data wab-frames``. The identity is the instance id.

Evaluation (protocol ``id-intra-cross``): every live crop is a query against all crops of the split's parts,
its own crop removed; relevant = same instance. ``per_subset.cross`` ranks shop crops only (video-to-shop),
``per_subset.intra`` live crops only (frame-to-frame). With ``exclude_same_video`` a query's own video's other
frames are removed from its ranking, as a ReID camera rule would (a query whose instance appears in one video
only then has no intra-domain positive and is counted as invalid).
"""

from __future__ import annotations

import fnmatch
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator

from fashion_bench.data.adapters import DatasetInfo, register
from fashion_bench.data.adapters._files import ENCODING, UniqueIds
from fashion_bench.data.schema import DataError, Item, Query, Split, SplitNotFound, as_id
from fashion_bench.data.transforms import crop_image_ref

DEFAULT_PARTS = {"train": ["train*"], "val": ["val*"], "test": ["test*"]}


def find_parts(root: Path) -> list[Path]:
    """The part folders under ``root`` (or ``root`` itself when it is one part)."""
    def is_part(p: Path) -> bool:
        return (p / "image_annotation").is_dir() or (p / "video_annotation").is_dir()

    if is_part(root):
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and is_part(p)) if root.is_dir() else []


def frame_path(frames_root: Path, part: str, video_id: str, frame_index: int) -> Path:
    return frames_root / part / video_id / f"{frame_index}.jpg"


def read_json(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding=ENCODING))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: malformed JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(record).__name__}")
    return record


def require(record: dict[str, Any], key: str, where: str) -> Any:
    if key not in record:
        raise DataError(f"{where}: missing key '{key}'")
    return record[key]


def video_frames(path: Path) -> tuple[str, list[tuple[int, list[dict[str, Any]]]]]:
    """(video_id, [(frame_index, annotations)]) of a video annotation file."""
    record = read_json(path)
    video_id = as_id(require(record, "video_id", str(path)), str(path), "video_id")
    frames = require(record, "frames", str(path))
    if not isinstance(frames, list):
        raise DataError(f"{path}: 'frames' must be a list, got {type(frames).__name__}")
    out = []
    for n, frame in enumerate(frames):
        where = f"{path}: frames[{n}]"
        if not isinstance(frame, dict):
            raise DataError(f"{where}: expected an object")
        index = require(frame, "frame_index", where)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise DataError(f"{where}: 'frame_index' must be a non-negative integer, got {index!r}")
        annotations = require(frame, "annotations", where)
        if not isinstance(annotations, list):
            raise DataError(f"{where}: 'annotations' must be a list")
        out.append((index, annotations))
    return video_id, out


def _garments(annotations: list[Any], where: str) -> Iterator[tuple[int, dict[str, Any], tuple[int, int, int, int]]]:
    """(index, annotation, box) of the annotations with instance_id > 0, checked."""
    for k, ann in enumerate(annotations):
        at = f"{where} annotations[{k}]"
        if not isinstance(ann, dict):
            raise DataError(f"{at}: expected an object")
        instance = require(ann, "instance_id", at)
        if isinstance(instance, bool) or not isinstance(instance, int):
            raise DataError(f"{at}: 'instance_id' must be an integer, got {instance!r}")
        if instance <= 0:
            continue
        box = require(ann, "box", at)
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
            raise DataError(f"{at}: 'box' must be [x1, y1, x2, y2], got {box!r}")
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        if x2 <= x1 or y2 <= y1:
            raise DataError(f"{at}: empty box {box} (expected x1 < x2 and y1 < y2)")
        yield k, ann, (x1, y1, x2, y2)


def _text(path: Path) -> list[str]:
    """The optional title / speech text; UTF-8, or GB18030 (a superset of GBK) for files written that way."""
    if not path.exists():
        return []
    data = path.read_bytes()
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        text = data.decode("gb18030", errors="replace").strip()
    return [text] if text else []


def _item(item_id: str, image: str, box: tuple[int, int, int, int], ann: dict[str, Any], domain: str,
          text: list[str], source: str) -> Item:
    attributes = {k: ann[k] for k in ("viewpoint", "display") if k in ann} | {"source": source}
    return Item(item_id, crop_image_ref(image, box), text, str(ann["instance_id"]), domain, str(ann.get("label", "")), attributes)


def read_part(root: Path, part: Path, frames_root: Path) -> list[Item]:
    """The garment crops of one part: shop crops, then live crops (attribute ``source``: item or video id).
    Image paths are relative to ``root``, as is ``frames_root`` unless it is absolute. Two annotation files (or
    two frames of one file) that describe the same crop are an error naming both."""
    items: list[Item] = []
    ids = UniqueIds("annotation of")
    rel = part.relative_to(root)
    for path in sorted((part / "image_annotation").glob("*/*.json")):
        record = read_json(path)
        shop_id = as_id(require(record, "item_id", str(path)), str(path), "item_id")
        image = str(rel / "image" / path.parent.name / str(require(record, "img_name", str(path))))
        annotations = require(record, "annotations", str(path))
        if not isinstance(annotations, list):
            raise DataError(f"{path}: 'annotations' must be a list")
        text = _text(part / "image_text" / f"{shop_id}.txt")
        for k, ann, box in _garments(annotations, str(path)):
            item_id = f"{part.name}/shop/{shop_id}/{path.stem}/{k}"
            ids.add(item_id, str(path), shown=f"crop '{item_id}' (its item_id and img_name)")
            items.append(_item(item_id, image, box, ann, "shop", text, shop_id))
    videos = sorted((part / "video_annotation").glob("*.json"))
    if videos and not (root / frames_root / part.name).is_dir():
        raise DataError(
            f"{part}: the video frames are not extracted ({root / frames_root / part.name} does not exist); run "
            f"`fashion-bench data wab-frames --root {root} --out {root / frames_root}`"
        )
    for path in videos:
        video_id, frames = video_frames(path)
        text = _text(part / "video_text" / f"{video_id}.txt")
        for index, annotations in frames:
            image = str(frame_path(frames_root, part.name, video_id, index))
            for k, ann, box in _garments(annotations, f"{path}: frame {index}"):
                item_id = f"{part.name}/live/{video_id}/{index}/{k}"
                ids.add(item_id, f"{path}: frame {index}", shown=f"crop '{item_id}' (its video_id and frame_index)")
                items.append(_item(item_id, image, box, ann, "live", text, video_id))
    return items


def wab_loader(
    root: Path,
    dataset: str,
    *,
    parts: dict[str, list[str]] | None = None,
    frames_root: str | None = None,
    exclude_same_video: bool = False,
) -> Callable[[str], Split]:
    """Args:
    parts: split name -> part folder names or glob patterns (default: ``train*``, ``val*``, ``test*``).
    frames_root: where ``data wab-frames`` wrote the frames (default ``<root>/frames``; relative to the root).
    exclude_same_video: remove the query video's other frames from its ranking (see the module docstring).
    """
    patterns = {**DEFAULT_PARTS, **(parts or {})}
    frames = Path(frames_root).expanduser() if frames_root else Path("frames")

    def load(split: str) -> Split:
        if split not in patterns:
            raise DataError(f"{root}: WAB split '{split}' is not configured; configured splits {sorted(patterns)}")
        available = find_parts(root)
        chosen = [p for p in available if any(fnmatch.fnmatch(p.name, pat) for pat in patterns[split])]
        if not chosen:
            raise SplitNotFound(
                f"{root}: no part folder matches {patterns[split]} for split '{split}' (parts found: "
                f"{[p.name for p in available]}); map splits to parts with --data.adapter_args '{{parts: {{...}}}}'"
            )
        items: dict[str, Item] = {}
        for part in chosen:
            items.update((it.item_id, it) for it in read_part(root, part, frames))
        if split == "train":
            return Split(split, items, list(items), [])
        return live_queries(split, items, exclude_same_video)

    load.image_root = root  # type: ignore[attr-defined]
    return load


def live_queries(split: str, items: dict[str, Item], exclude_same_video: bool) -> Split:
    """Every live crop queries all crops; positives = the other crops of its instance."""
    by_identity: dict[str, list[str]] = defaultdict(list)
    for item in items.values():
        by_identity[item.identity].append(item.item_id)
    queries = []
    for item in items.values():
        if item.domain != "live":
            continue
        same_video = [m for m in by_identity[item.identity] if m != item.item_id and items[m].domain == "live"
                      and items[m].attributes["source"] == item.attributes["source"]] if exclude_same_video else []
        positives = [m for m in by_identity[item.identity] if m != item.item_id and m not in same_video]
        queries.append(Query(item.item_id, positives, image=item.item_id, exclude=same_video, category=item.category))
    if not queries:
        raise DataError(f"WAB split '{split}': no live-frame garment (instance_id > 0) to serve as a query")
    return Split(split, items, list(items), queries)


register(DatasetInfo("wab", task="id", protocol="id-intra-cross", loader=wab_loader))

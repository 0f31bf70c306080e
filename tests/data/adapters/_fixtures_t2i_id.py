"""Tiny fixtures in the real formats of FashionGen, KAGL, WAB and DeepFashion In-shop, and a validate runner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[3]
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 40, 220), (230, 220, 30), (200, 40, 200), (30, 210, 210), (250, 140, 20), (90, 90, 90)]


def save_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (32, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def write_fashiongen(path: Path, products: dict[str, int], *, drop: str | None = None, short: str | None = None) -> Path:
    """One FashionGen HDF5 file: ``products`` maps product id -> number of images (rows in that order).
    ``drop`` leaves a dataset out; ``short`` writes one row fewer in a dataset (a truncated file)."""
    import h5py

    rows = [(pid, n) for pid, count in products.items() for n in range(count)]
    colours = [COLOURS[i % len(COLOURS)] for i, count in enumerate(products.values()) for _ in range(count)]
    columns = {
        "input_image": np.stack([np.full((16, 16, 3), c, dtype=np.uint8) for c in colours]),
        "input_productID": [pid for pid, _ in rows],
        "input_description": [f"a garment of product {pid}" for pid, _ in rows],
        "input_name": [f"name {pid}" for pid, _ in rows],
        "input_category": ["TOPS" if i % 2 else "SHOES" for i, _ in enumerate(rows)],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        for key, values in columns.items():
            if key == drop:
                continue
            if key != "input_image":
                values = np.array([[v.encode()] for v in values], dtype="S64")
            fh.create_dataset(key, data=values[:-1] if key == short else values)
    return path


STYLES_HEADER = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName"


def write_kagl_csv(root: Path, n: int = 20, lines: list[str] | None = None) -> Path:
    """Kaggle layout: styles.csv (line 3 has an unquoted comma in its display name, as in the real file) + images."""
    rows = lines or [
        f"{1000 + i},Men,Apparel,Topwear,{'Tshirts' if i % 2 else 'Shirts'},Blue,Summer,2012,Casual,"
        f"Product {i}{', slim fit' if i == 1 else ''} colour {i}"
        for i in range(n)
    ]
    root.mkdir(parents=True, exist_ok=True)
    (root / "styles.csv").write_text("\n".join([STYLES_HEADER, *rows]) + "\n")
    for i in range(n):
        save_image(root / "images" / f"{1000 + i}.jpg", COLOURS[i % len(COLOURS)], (60, 80))
    return root


def kagl_hf_dataset(n: int = 20):
    """An in-memory Hugging Face dataset shaped like ashraq/fashion-product-images-small (Image column)."""
    import datasets

    return datasets.Dataset.from_dict(
        {
            "id": [2000 + i for i in range(n)],
            "productDisplayName": [f"HF product {i}" for i in range(n)],
            "articleType": ["Tshirts"] * n,
            "image": [Image.new("RGB", (60, 80), COLOURS[i % len(COLOURS)]) for i in range(n)],
        },
        features=datasets.Features(
            {"id": datasets.Value("int64"), "productDisplayName": datasets.Value("string"),
             "articleType": datasets.Value("string"), "image": datasets.Image()}
        ),
    )


def write_video(path: Path, colours: list[tuple[int, int, int]], size: int = 64) -> Path:
    """An mp4 whose frame i is a solid ``colours[i]``."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "1"}
        for colour in colours:
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), colour, dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _ann(instance: int, box: list[int], label: str = "shirt") -> dict:
    return {"label": label, "viewpoint": 1, "display": 1, "instance_id": instance, "box": box}


def write_wab_part(root: Path, part: str, instances: list[int], *, video_frames: int = 5) -> Path:
    """One WAB part: per instance a shop item with 2 images (the instance + a distractor box with instance 0)
    and a video whose frames 0, 2 and 4 are annotated. Frame i of every video is solid COLOURS[i]."""
    base = root / part
    for instance in instances:
        item, video = f"item{instance}", f"video{instance}"
        for n in range(2):
            save_image(base / "image" / item / f"{n}.jpg", COLOURS[instance % len(COLOURS)], (64, 64))
            record = {"item_id": item, "img_name": f"{n}.jpg",
                      "annotations": [_ann(instance, [4, 4, 40, 60]), _ann(0, [0, 0, 10, 10], "pants")]}
            dest = base / "image_annotation" / item / f"{n}.json"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(json.dumps(record))
        (base / "image_text").mkdir(parents=True, exist_ok=True)
        (base / "image_text" / f"{item}.txt").write_text(f"title of {item}\n")
        write_video(base / "video" / f"{video}.mp4", COLOURS[:video_frames])
        frames = [{"frame_index": i, "annotations": [_ann(instance, [8, 8, 56, 56]), _ann(0, [0, 0, 8, 8])]}
                  for i in range(0, video_frames, 2)]
        dest = base / "video_annotation" / f"{video}.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps({"video_id": video, "frames": frames}))
    return base


def write_inshop(root: Path, *, items: int = 4, bbox: bool = True) -> Path:
    """In-shop: per item 2 train images (items 0, 1) or 1 query + 2 gallery images (items >= 2)."""
    lines = []
    for k in range(items):
        item = f"id_{k:08d}"
        folder = f"img/{'WOMEN' if k % 2 else 'MEN'}/Dresses/{item}"
        statuses = ["train", "train"] if k < 2 else ["query", "gallery", "gallery"]
        for n, status in enumerate(statuses):
            name = f"{folder}/{n:02d}_{n + 1}_front.jpg"
            save_image(root / name, COLOURS[k % len(COLOURS)], (48, 64))
            lines.append((name, item, status))
    text = f"{len(lines)}\nimage_name item_id evaluation_status\n" + "".join(f"{a:<60} {b} {c}\n" for a, b, c in lines)
    (root / "list_eval_partition.txt").write_text(text)
    if bbox:
        boxes = "".join(f"{a:<60} 1  1  4  4  40  60\n" for a, _, _ in lines)
        (root / "list_bbox_inshop.txt").write_text(
            f"{len(lines)}\nimage_name clothes_type pose_type x_1 y_1 x_2 y_2\n{boxes}"
        )
    return root


def validate(experiment: str, root: Path, runs: Path, *extra: str) -> dict:
    """``validate`` of configs/experiment/<experiment>.yaml on ``root`` with the tiny encoder; its results.json."""
    from fashion_bench.lightning_cli import run

    argv = [
        "validate", "--config", str(REPO / "configs" / "experiment" / f"{experiment}.yaml"),
        "--data.root", str(root), "--data.num_workers", "0", "--data.eval_batch_size", "8",
        "--model.init_args.encoder", str(REPO / "configs" / "encoder" / "tiny.yaml"),
        "--trainer.default_root_dir", str(runs), "--trainer.enable_progress_bar", "false", *extra,
    ]
    assert run(argv) == 0
    (path,) = sorted((runs / experiment).glob("*/results.json"))
    return json.loads(path.read_text())

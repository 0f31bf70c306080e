"""Images of one product: a clean shop view and degraded live views, drawn with PIL at twice the output size.

The garment is drawn once as an RGBA layer (silhouette filled with the pattern, construction details, emblem)
and every view composes that layer onto its background. Silhouettes are defined in unit coordinates (the
image is [0, 1] x [0, 1]); tops and bottoms are symmetric and given by their right half.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fashion_bench.data.synthetic.catalogue import Product, secondary_rgb
from fashion_bench.data.synthetic.config import WorldConfig
from fashion_bench.data.synthetic.vocab import COLOUR_BY_NAME, RGB

Points = list[tuple[float, float]]
SHOP_BACKGROUND: RGB = (236, 236, 233)
FIXED_TONES: dict[str, RGB] = {
    "sole": (232, 230, 224), "dark": (48, 42, 38), "tan": (176, 134, 92), "metal": (186, 186, 192),
}


@dataclass
class Garment:
    """Unit-coordinate drawing: pattern-filled polygons / ellipses, then solid parts and detail lines on top."""

    polygons: list[Points] = field(default_factory=list)
    ellipses: list[tuple[float, float, float, float]] = field(default_factory=list)
    solids: list[tuple[Points, str]] = field(default_factory=list)  # tone: "band" / "outline" / FIXED_TONES
    lines: list[tuple[Points, str]] = field(default_factory=list)


def _mirror(right: Points) -> Points:
    """Close a symmetric outline from its right half (x offsets from the centre line)."""
    return [(0.5 + dx, y) for dx, y in right] + [(0.5 - dx, y) for dx, y in reversed(right)]


def _rect(x0: float, y0: float, x1: float, y1: float) -> Points:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _sym(points: Points) -> list[Points]:
    """A detail drawn on both sides of the centre line (points as x offsets)."""
    return [[(0.5 + dx, y) for dx, y in points], [(0.5 - dx, y) for dx, y in points]]


_SLEEVES = {
    "long sleeve": [(0.2, 0.23), (0.38, 0.72), (0.3, 0.75), (0.2, 0.4)],
    "short sleeve": [(0.2, 0.23), (0.33, 0.4), (0.26, 0.46), (0.2, 0.37)],
    "sleeveless": [(0.15, 0.21), (0.18, 0.3), (0.2, 0.38)],
}
_TOP_HEMS = {"cropped": 0.62, "hip-length": 0.82, "long": 0.95}


def _top(category: str, length: str) -> Garment:
    sleeve = _SLEEVES["long sleeve" if category == "jacket" else length]
    hem = _TOP_HEMS.get(length, 0.86) if category == "jacket" else 0.86
    neck_dip = {"shirt": 0.29, "jacket": 0.4}.get(category, 0.26)
    g = Garment(polygons=[_mirror([(0.0, neck_dip), (0.07, 0.2), *sleeve, (0.21, hem), (0.0, hem)])])
    if category == "hoodie":
        g.ellipses.append((0.38, 0.08, 0.62, 0.3))
        g.lines += [([(0.38, 0.62), (0.62, 0.62), (0.66, 0.78), (0.34, 0.78), (0.38, 0.62)], "outline")]
        g.lines += [(line, "outline") for line in _sym([(0.03, 0.27), (0.035, 0.4)])]
    elif category == "shirt":
        g.solids += [(line, "band") for line in _sym([(0.0, 0.3), (0.07, 0.19), (0.1, 0.27)])]
        g.lines += [([(0.5, 0.3), (0.5, hem)], "outline")]
        g.solids += [(_rect(0.488, y - 0.012, 0.512, y + 0.012), "outline") for y in (0.4, 0.52, 0.64, 0.76)]
    elif category == "sweater":
        g.solids.append((_rect(0.29, hem - 0.06, 0.71, hem), "band"))
        g.lines.append(([(0.43, 0.215), (0.5, 0.275), (0.57, 0.215)], "band"))
    elif category == "jacket":
        g.lines += [([(0.5, neck_dip), (0.5, hem)], "metal")]
        g.lines += [(line, "outline") for line in _sym([(0.07, 0.2), (0.1, 0.3), (0.0, neck_dip)])]
    else:  # t-shirt
        g.lines.append(([(0.43, 0.205), (0.5, 0.26), (0.57, 0.205)], "outline"))
    if length == "short sleeve":
        g.lines += [(line, "outline") for line in _sym([(0.33, 0.4), (0.26, 0.46)])]
    return g


def _bottom(category: str, length: str) -> Garment:
    if category == "skirt":
        hem = {"mini": 0.45, "midi": 0.68, "maxi": 0.92}[length]
        flare = 0.14 + 0.25 * (hem - 0.15)
        g = Garment(polygons=[_mirror([(0.0, 0.15), (0.14, 0.15), (flare, hem), (0.0, hem)])])
        g.lines += [([(0.5 + dx, 0.19), (0.5 + dx * 2.2, hem)], "outline") for dx in (-0.07, 0.0, 0.07)]
        g.solids.append((_rect(0.36, 0.13, 0.64, 0.19), "band"))
        return g
    if category == "leggings":
        hem = {"cropped": 0.7, "full-length": 0.92}[length]
        right = [(0.0, 0.12), (0.15, 0.12), (0.17, 0.28), (0.11, hem), (0.03, hem), (0.0, 0.4)]
    elif category == "shorts":
        hem = {"mid-thigh": 0.5, "knee-length": 0.64}[length]
        right = [(0.0, 0.15), (0.18, 0.15), (0.24, hem), (0.03, hem), (0.0, 0.38)]
    else:  # trousers
        hem = {"cropped": 0.74, "full-length": 0.92}[length]
        right = [(0.0, 0.12), (0.18, 0.12), (0.2, 0.3), (0.23, hem), (0.04, hem), (0.0, 0.42)]
    (_, top), (waist, _) = right[:2]
    g = Garment(polygons=[_mirror(right)], solids=[(_rect(0.5 - waist, top, 0.5 + waist, top + 0.05), "band")])
    if category == "trousers":
        g.lines += [(line, "outline") for line in _sym([(0.12, 0.3), (0.135, hem)])]
        g.lines.append(([(0.5, top + 0.05), (0.5, 0.3)], "outline"))
    return g


def _footwear(category: str, length: str) -> Garment:
    if category == "sneaker":
        low = length == "low-top"
        collar = [(0.12, 0.46), (0.2, 0.42), (0.33, 0.45)] if low else [(0.12, 0.26), (0.34, 0.24), (0.38, 0.4)]
        upper = [(0.12, 0.64), *collar, (0.45, 0.42), (0.62, 0.46), (0.82, 0.53), (0.9, 0.6), (0.9, 0.64)]
        sole = [(0.1, 0.63), (0.88, 0.63), (0.92, 0.66), (0.88, 0.71), (0.12, 0.71), (0.09, 0.67)]
        laces = [([(0.46 + 0.05 * i, 0.43 + 0.02 * i), (0.5 + 0.05 * i, 0.49 + 0.02 * i)], "sole") for i in range(3)]
        return Garment(polygons=[upper], solids=[(sole, "sole")], lines=laces + [([(0.7, 0.5), (0.76, 0.63)], "outline")])
    if category == "boot":
        top = 0.36 if length == "ankle" else 0.08
        upper = [(0.2, 0.79), (0.2, top), (0.48, top), (0.5, 0.56), (0.72, 0.6), (0.86, 0.7), (0.86, 0.79)]
        sole = [(0.16, 0.78), (0.88, 0.78), (0.88, 0.82), (0.3, 0.82), (0.3, 0.86), (0.16, 0.86)]
        pull_tab = [(0.2, top + 0.04), (0.48, top + 0.04)]
        return Garment(polygons=[upper], solids=[(sole, "dark")], lines=[(pull_tab, "outline")])
    if length == "flat":
        sole = _rect(0.1, 0.7, 0.9, 0.75)
        straps = [[(0.48, 0.7), (0.55, 0.5), (0.78, 0.53), (0.84, 0.7)], [(0.2, 0.7), (0.22, 0.38), (0.38, 0.38), (0.37, 0.7)]]
    else:
        sole = [(0.12, 0.5), (0.3, 0.52), (0.6, 0.7), (0.9, 0.7), (0.9, 0.75), (0.6, 0.75), (0.3, 0.57), (0.12, 0.55)]
        sole_heel = [(0.14, 0.55), (0.2, 0.55), (0.19, 0.8), (0.16, 0.8)]
        straps = [[(0.52, 0.7), (0.58, 0.5), (0.8, 0.53), (0.86, 0.7)], [(0.18, 0.53), (0.2, 0.3), (0.37, 0.3), (0.39, 0.6)]]
        return Garment(polygons=straps, solids=[(sole, "tan"), (sole_heel, "tan")])
    return Garment(polygons=straps, solids=[(sole, "tan")])


def garment_shape(product: Product) -> Garment:
    builder = {"tops": _top, "bottoms": _bottom, "footwear": _footwear}[product.super_category]
    return builder(product.category, product.length)


def _pattern(product: Product, size: int) -> np.ndarray:
    """The fabric as an RGB array: main colour with the pattern drawn in the secondary colour."""
    main = np.array(product.main_rgb, dtype=np.float32)
    second = np.array(secondary_rgb(product), dtype=np.float32)
    sig = product.signature
    coords = np.arange(size, dtype=np.float32) / size
    x, y = np.meshgrid(coords, coords)
    angle = math.radians(sig.orientation)
    u = (x * math.cos(angle) + y * math.sin(angle)) / sig.period + product.phase[0]
    v = (-x * math.sin(angle) + y * math.cos(angle)) / sig.period + product.phase[1]
    if product.pattern == "striped":
        amount = (v % 1.0 < sig.duty).astype(np.float32)
    elif product.pattern == "dotted":
        u, v = u / 1.4, v / 1.4
        du = (u + 0.5 * (np.floor(v) % 2)) % 1.0 - 0.5
        dv = v % 1.0 - 0.5
        amount = (du * du + dv * dv < (0.55 * sig.duty) ** 2).astype(np.float32)
    elif product.pattern == "checked":
        u, v = u / 1.3, v / 1.3
        amount = ((u % 1.0 < sig.duty).astype(np.float32) + (v % 1.0 < sig.duty).astype(np.float32)) / 2
    elif product.pattern == "zigzag":
        wave = np.abs((u % 1.0) - 0.5)
        amount = ((v + wave) % 1.0 < sig.duty).astype(np.float32)
    else:
        amount = np.zeros_like(x)
    fabric = main * (1 - amount[..., None]) + second * amount[..., None]
    return fabric.clip(0, 255).astype(np.uint8)


def _scale(rgb: RGB | tuple[float, ...], factor: float) -> RGB:
    return tuple(int(max(0, min(255, c * factor))) for c in rgb)  # type: ignore[return-value]


def _tone(name: str, product: Product) -> RGB:
    if name in FIXED_TONES:
        return FIXED_TONES[name]
    light = sum(product.main_rgb) > 600
    if name == "band":
        return _scale(product.main_rgb, 0.86 if light else 0.78)
    return (150, 150, 150) if max(product.main_rgb) < 60 else _scale(product.main_rgb, 0.55)


def _star(cx: float, cy: float, r: float) -> Points:
    radii = [r if i % 2 == 0 else 0.45 * r for i in range(10)]
    return [(cx + radius * math.sin(i * math.pi / 5), cy - radius * math.cos(i * math.pi / 5)) for i, radius in enumerate(radii)]


def _draw_emblem(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: RGB) -> None:
    edge = (30, 30, 30) if sum(fill) > 380 else (235, 235, 235)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=fill, outline=edge)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(2, round(r * 0.45)))
    elif shape == "square":
        draw.rectangle((cx - 0.85 * r, cy - 0.85 * r, cx + 0.85 * r, cy + 0.85 * r), fill=fill, outline=edge)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)], fill=fill, outline=edge)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + 0.75 * r, cy), (cx, cy + r), (cx - 0.75 * r, cy)], fill=fill, outline=edge)
    elif shape == "star":
        draw.polygon(_star(cx, cy, 1.15 * r), fill=fill, outline=edge)
    else:  # cross
        t = 0.35 * r
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=fill)
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=fill)


def garment_layer(product: Product, cfg: WorldConfig, size: int) -> Image.Image:
    """The product drawn on a transparent ``size`` x ``size`` canvas."""
    shape = garment_shape(product)
    width = product.signature.width

    def px(points: Points) -> list[tuple[float, float]]:
        return [((0.5 + (x - 0.5) * width) * size, y * size) for x, y in points]

    mask = Image.new("L", (size, size), 0)
    mask_draw = ImageDraw.Draw(mask)
    for poly in shape.polygons:
        mask_draw.polygon(px(poly), fill=255)
    for x0, y0, x1, y1 in shape.ellipses:
        (a, b), (c, d) = px([(x0, y0), (x1, y1)])
        mask_draw.ellipse((a, b, c, d), fill=255)
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    layer.paste(Image.fromarray(_pattern(product, size)), mask=mask)
    draw = ImageDraw.Draw(layer)
    stroke = max(1, size // 64)
    outline = _tone("outline", product)
    for poly in shape.polygons:
        draw.polygon(px(poly), outline=outline, width=stroke)
    for x0, y0, x1, y1 in shape.ellipses:  # only the upper arc: the lower half lies over the body
        (a, b), (c, d) = px([(x0, y0), (x1, y1)])
        draw.arc((a, b, c, d), 180, 360, fill=outline, width=stroke)
    for poly, tone in shape.solids:
        draw.polygon(px(poly), fill=_tone(tone, product), outline=outline)
    for line, tone in shape.lines:
        draw.line(px(line), fill=_tone(tone, product), width=stroke)
    sig = product.signature
    (ex, ey), = px([sig.emblem_xy])
    _draw_emblem(draw, sig.emblem_shape, ex, ey, cfg.emblem_scale * size / 2, COLOUR_BY_NAME[sig.emblem_colour].rgb)
    return layer


def _muted(rng: np.random.Generator, saturation: float = 0.35) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, saturation), rng.uniform(0.3, 0.92))
    return round(r * 255), round(g * 255), round(b * 255)


def _clutter(size: int, clutter: float, rng: np.random.Generator) -> Image.Image:
    """A live background: a gradient wall, maybe a floor, and random objects."""
    top, bottom = np.array(_muted(rng), np.float32), np.array(_muted(rng), np.float32)
    ramp = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    wall = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (size, size, 3))
    image = Image.fromarray(wall.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    if rng.random() < 0.5:
        floor = rng.uniform(0.6, 0.85) * size
        draw.rectangle((0, floor, size, size), fill=_muted(rng, 0.3))
    for _ in range(rng.poisson(8 * clutter)):
        x, y = rng.uniform(-0.1, 1.0, 2) * size
        w, h = rng.uniform(0.05, 0.4, 2) * size
        colour = _muted(rng, 0.8)
        kind = rng.integers(3)
        if kind == 0:
            draw.rectangle((x, y, x + w, y + h), fill=colour)
        elif kind == 1:
            draw.ellipse((x, y, x + w, y + h), fill=colour)
        else:
            draw.line((x, y, x + w, y + h), fill=colour, width=max(1, int(rng.uniform(0.01, 0.04) * size)))
    return image


def _occlude(image: Image.Image, centre: tuple[float, float], rng: np.random.Generator) -> None:
    """A hand, a bag strap or a passer-by: a blob over part of the garment."""
    size = image.width
    cx, cy = (np.array(centre) + rng.uniform(-0.25, 0.25, 2)) * size
    w, h = rng.uniform(0.15, 0.35, 2) * size
    draw = ImageDraw.Draw(image)
    box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    if rng.random() < 0.5:
        skin = (int(rng.uniform(150, 235)), int(rng.uniform(105, 185)), int(rng.uniform(80, 160)))
        draw.ellipse(box, fill=skin)
    else:
        draw.rounded_rectangle(box, radius=w / 5, fill=_muted(rng, 0.6))


def shop_view(layer: Image.Image, out_size: int) -> Image.Image:
    image = Image.new("RGB", layer.size, SHOP_BACKGROUND)
    image.paste(layer, (0, 0), layer)
    return image.resize((out_size, out_size), Image.LANCZOS)


def _placement(size: int, scale: float, angle: float, shift: np.ndarray) -> tuple[float, ...]:
    """Affine coefficients (output -> input pixel, as PIL wants them) of a rotation and scaling about the centre,
    followed by a shift."""
    centre = size / 2
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    x, y = centre + shift[0], centre + shift[1]
    return (cos, sin, centre - cos * x - sin * y, -sin, cos, centre + sin * x - cos * y)


def live_view(
    layer: Image.Image, cfg: WorldConfig, out_size: int, rng: np.random.Generator, low_quality: bool
) -> tuple[Image.Image, int]:
    """The garment photographed in the wild: placement, clutter, occlusion, light, blur, noise; returns the image
    and the JPEG quality to store it with (the compression artefacts are the last degradation)."""
    d, size = cfg.degradation, layer.width
    image = _clutter(size, cfg.clutter, rng)
    scale, angle = rng.uniform(1 - 0.4 * d, 1.05), math.radians(rng.uniform(-25, 25) * d)
    shift = rng.uniform(-0.15, 0.15, 2) * d * size
    placed = layer.transform(layer.size, Image.AFFINE, _placement(size, scale, angle, shift), Image.BILINEAR)
    image.paste(placed, (0, 0), placed)
    if rng.random() < cfg.occlusion:
        _occlude(image, (0.5 + shift[0] / size, 0.5 + shift[1] / size), rng)
    image = image.resize((out_size, out_size), Image.LANCZOS)
    pixels = np.asarray(image, dtype=np.float32) * rng.uniform(1 - 0.25 * d, 1 + 0.15 * d, 3)  # light and colour cast
    pixels += rng.normal(0, rng.uniform(0, 14 * d), pixels.shape)
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2 * d)))
    if low_quality:
        small = max(8, round(out_size * rng.uniform(0.25, 0.45)))
        image = image.resize((small, small), Image.BILINEAR).resize((out_size, out_size), Image.BILINEAR)
    return image, int(rng.uniform(95 - 70 * d, 95))


@dataclass(frozen=True)
class View:
    item_id: str
    domain: str
    low_quality: bool


def view_ids(product: Product, cfg: WorldConfig) -> list[str]:
    """The shop view, then the live views (none for a distractor, which only stands in shop galleries)."""
    live_views = 0 if product.distractor else cfg.live_views
    return [f"{product.product_id}-shop"] + [f"{product.product_id}-live{k}" for k in range(1, live_views + 1)]


def render_product(product: Product, cfg: WorldConfig, seed: int, image_dir: Path) -> list[View]:
    """Write the product's shop and live images; the random stream depends only on (seed, product index)."""
    rng = np.random.default_rng([seed, product.index])
    layer = garment_layer(product, cfg, 2 * cfg.image_size)
    shop_id, *live_ids = view_ids(product, cfg)
    shop_view(layer, cfg.image_size).save(image_dir / f"{shop_id}.jpg", quality=cfg.jpeg_quality)
    views = [View(shop_id, "shop", False)]
    for item_id in live_ids:
        low_quality = bool(rng.random() < cfg.low_quality_fraction)
        image, quality = live_view(layer, cfg, cfg.image_size, rng, low_quality)
        image.save(image_dir / f"{item_id}.jpg", quality=min(quality, cfg.jpeg_quality))
        views.append(View(item_id, "live", low_quality))
    return views

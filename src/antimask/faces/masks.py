"""Synthetic face masks drawn by code on an aligned face from its 68 landmarks (surgical, cloth, N95, KN95).

Pure functions: ``draw_mask(face, landmarks, style)`` returns the masked face and the pixels the mask covers;
``MaskAugment`` draws a style per call for a Dataset. Style families are split into ``TRAIN_STYLES`` and
``HELD_OUT_STYLES`` so that evaluation can use masks never seen in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from antimask.faces.align import TEMPLATE_224

RGB = tuple[int, int, int]

# Reference distance between jaw points 0 and 16 on the template: lengths below are template pixels (at 224)
# and are scaled by the face's own width, so a mask fits the face whatever the image size.
_TEMPLATE_WIDTH = float(np.linalg.norm(TEMPLATE_224[16] - TEMPLATE_224[0]))
_SUPERSAMPLE = 4  # outlines are filled at 4x and averaged down: anti-aliased edges

# ------------------------------------------------------------------------------------------------ families
# kind: the cut (surgical, cloth, n95, kn95); colours: base colours one is drawn from; patterns: cloth prints.
FAMILIES: dict[str, dict] = {
    "surgical_blue": dict(kind="surgical", colours=[(120, 180, 220), (90, 160, 215), (150, 200, 230), (70, 140, 200)]),
    "surgical_white": dict(kind="surgical", colours=[(236, 238, 240), (225, 230, 235), (245, 245, 242)]),
    "surgical_green": dict(kind="surgical", colours=[(120, 190, 170), (100, 175, 150), (150, 205, 185)]),
    "surgical_pink": dict(kind="surgical", colours=[(235, 170, 190), (240, 190, 205), (225, 150, 175)]),
    "cloth_black": dict(kind="cloth", colours=[(28, 28, 30), (40, 40, 44), (20, 22, 26)]),
    "cloth_grey": dict(kind="cloth", colours=[(120, 122, 126), (160, 160, 165), (90, 92, 96)]),
    "cloth_navy": dict(kind="cloth", colours=[(30, 40, 80), (25, 35, 65), (40, 55, 100)]),
    "cloth_stripes": dict(kind="cloth", pattern="stripes"),
    "cloth_dots": dict(kind="cloth", pattern="dots"),
    "cloth_checks": dict(kind="cloth", pattern="checks"),
    "cloth_motif": dict(kind="cloth", pattern="motif"),
    "n95": dict(kind="n95", colours=[(238, 238, 235), (225, 225, 222), (200, 202, 205)]),
    "n95_valve": dict(kind="n95", colours=[(238, 238, 235), (225, 225, 222), (200, 202, 205)], valve=True),
    "kn95": dict(kind="kn95", colours=[(240, 240, 240), (228, 230, 232), (170, 172, 176)]),
}
# Never drawn in training: one surgical colour, one cloth print, and the KN95 cut.
HELD_OUT_STYLES: tuple[str, ...] = ("surgical_green", "cloth_checks", "kn95")
TRAIN_STYLES: tuple[str, ...] = tuple(name for name in FAMILIES if name not in HELD_OUT_STYLES)

# Fabric colours for patterned cloth masks: (ground, print).
_PRINT_COLOURS: list[tuple[RGB, RGB]] = [
    ((30, 40, 80), (230, 230, 225)), ((230, 228, 220), (40, 50, 90)), ((25, 25, 28), (220, 220, 215)),
    ((170, 40, 50), (240, 235, 225)), ((60, 110, 70), (235, 230, 200)), ((235, 200, 120), (120, 60, 40)),
    ((200, 210, 225), (200, 60, 80)), ((90, 60, 110), (240, 200, 90)),
]

# Defaults a user may tune (to move into the config schema).
HEIGHT_RANGE = (0.2, 0.7)  # top edge along the nose bridge: 0 = nose tip (point 30), 1 = point 27
REDRAW_DILATE_PX = 4
REDRAW_FEATHER_PX = 4


@dataclass(frozen=True)
class MaskStyle:
    """Everything that decides how one mask looks; ``draw_mask`` is a pure function of face, landmarks and style."""

    family: str
    kind: str  # surgical | cloth | n95 | kn95
    colour: RGB
    colour2: RGB = (255, 255, 255)  # the print of a patterned cloth mask, the valve of an N95
    pattern: str = "plain"  # plain | stripes | dots | checks | motif
    pattern_scale: float = 10.0  # template pixels per repeat
    pattern_angle: float = 0.0  # degrees
    valve: bool = False
    valve_side: int = 1  # +1: the valve sits on the image's right
    height: float = 0.45  # top edge along the nose bridge: 0 = nose tip (30), 1 = point 27
    side_top: float = 1.8  # jaw index (fractional, 0-16 scale) where the side edge starts
    side_inset: float = 0.03  # share of the face's half-width the side edges sit inside the jaw line
    chin_margin: float = 5.0  # template pixels below the jaw line
    bulge: float = 2.0  # template pixels the top edge rises over the cheeks
    seam: bool = False  # a vertical centre seam (KN95, many cloth masks)
    straps: bool = True
    light: float = 0.0  # -1..1, where the light comes from horizontally
    shade: float = 1.0  # strength of the shading
    noise: float = 0.03  # fabric noise (fraction of full scale)
    seed: int = 0  # the fabric noise's seed


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _jitter(rng: np.random.Generator, colour: RGB, amount: float = 10.0) -> RGB:
    return tuple(int(np.clip(c + rng.normal(0, amount), 0, 255)) for c in colour)  # type: ignore[return-value]


def sample_style(rng: np.random.Generator, styles: Sequence[str] = TRAIN_STYLES,
                 height_range: tuple[float, float] = HEIGHT_RANGE) -> MaskStyle:
    """Draw one style: a family from ``styles`` (uniformly), then its colours, shape and shading."""
    unknown = [s for s in styles if s not in FAMILIES]
    if unknown or not styles:
        raise ValueError(f"unknown mask styles {unknown or '(none given)'}; choose from {sorted(FAMILIES)}")
    family = _pick(rng, list(styles))
    spec = FAMILIES[family]
    kind = spec["kind"]
    pattern = spec.get("pattern", "plain")
    if pattern == "plain":
        colour, colour2 = _jitter(rng, _pick(rng, spec["colours"]), 6), (255, 255, 255)
    else:
        ground, ink = _pick(rng, _PRINT_COLOURS)
        colour, colour2 = _jitter(rng, ground, 6), _jitter(rng, ink, 6)
        if rng.random() < 0.5:
            colour, colour2 = colour2, colour
    if kind == "n95":
        colour2 = _pick(rng, [(150, 152, 156), (235, 235, 235), (80, 140, 200), (230, 140, 60), (60, 60, 64)])
    height = float(rng.uniform(*height_range))
    shape = {
        "surgical": dict(side_top=rng.uniform(1.3, 2.2), side_inset=rng.uniform(-0.05, 0.04),
                         chin_margin=rng.uniform(4, 10), bulge=rng.uniform(0, 4)),
        "cloth": dict(side_top=rng.uniform(1.4, 2.4), side_inset=rng.uniform(0.0, 0.08),
                      chin_margin=rng.uniform(3.5, 8), bulge=rng.uniform(1, 6)),
        "n95": dict(side_top=rng.uniform(1.2, 2.0), side_inset=rng.uniform(-0.08, 0.0),
                    chin_margin=rng.uniform(10, 17), bulge=rng.uniform(-2, 2)),
        "kn95": dict(side_top=rng.uniform(1.5, 2.3), side_inset=rng.uniform(-0.03, 0.04),
                     chin_margin=rng.uniform(7, 13), bulge=rng.uniform(-3, 1)),
    }[kind]
    return MaskStyle(
        family=family, kind=kind, colour=colour, colour2=colour2, pattern=pattern,
        pattern_scale=float(rng.uniform(7, 14)), pattern_angle=float(_pick(rng, [0, 0, 90, 45, -45]) + rng.normal(0, 5)),
        valve=bool(spec.get("valve", False)), valve_side=int(_pick(rng, [-1, 1])), height=height,
        seam=kind == "kn95" or (kind == "cloth" and rng.random() < 0.5),
        straps=bool(rng.random() < 0.9), light=float(rng.uniform(-1, 1)), shade=float(rng.uniform(0.7, 1.3)),
        noise=float(rng.uniform(0.015, 0.04)), seed=int(rng.integers(2**31)),
        **{k: float(v) for k, v in shape.items()},
    )


# ------------------------------------------------------------------------------------------------ geometry
def _catmull_rom(points: np.ndarray, closed: bool, samples: int = 12) -> np.ndarray:
    """Points on a Catmull-Rom spline through ``points`` (smooth, passes through every control point)."""
    p = np.asarray(points, np.float64)
    ext = np.vstack([p[-1:], p, p[:2]]) if closed else np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    n = len(p) if closed else len(p) - 1
    t = np.linspace(0, 1, samples, endpoint=False)[:, None]
    out = []
    for i in range(n):
        p0, p1, p2, p3 = ext[i], ext[i + 1], ext[i + 2], ext[i + 3]
        out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    if not closed:
        out.append(p[-1:])
    return np.vstack(out)


def _jaw(lm: np.ndarray, t: float) -> np.ndarray:
    """The jaw line at fractional index t (0-16)."""
    i = int(np.clip(np.floor(t), 0, 15))
    f = t - i
    return lm[i] * (1 - f) + lm[i + 1] * f


@dataclass
class _Outline:
    polygon: np.ndarray  # (N, 2) closed outline
    top: np.ndarray  # (M, 2) top edge, left to right
    bottom: np.ndarray  # (K, 2) bottom edge, left to right
    unit: float  # image pixels per template pixel
    centre_x: float
    nose_top: np.ndarray
    corners: np.ndarray  # (4, 2): top-left, bottom-left, top-right, bottom-right side corners


def _outline(lm: np.ndarray, style: MaskStyle) -> _Outline:
    unit = float(np.linalg.norm(lm[16] - lm[0])) / _TEMPLATE_WIDTH
    cx = float((lm[27:31, 0].mean() + lm[8, 0]) / 2)
    half_width = float(lm[16, 0] - lm[0, 0]) / 2

    def inset(p: np.ndarray, amount: float) -> np.ndarray:
        return np.array([p[0] + np.sign(cx - p[0]) * amount * half_width, p[1]])

    nose_top = lm[30] + style.height * (lm[27] - lm[30])
    # Points above the nostril wings keep the nose covered however high the mask sits.
    wing_drop = {"surgical": 0.3, "cloth": 0.3, "n95": 0.35, "kn95": 0.45}[style.kind]
    wing_y = nose_top[1] + wing_drop * (lm[31, 1] - nose_top[1])
    wing_y = min(wing_y, (lm[31, 1] + lm[35, 1]) / 2 - 6 * unit)
    wing_l = np.array([lm[31, 0] - 5 * unit, wing_y])
    wing_r = np.array([lm[35, 0] + 5 * unit, wing_y])
    top_l = inset(_jaw(lm, style.side_top), style.side_inset)
    top_r = inset(_jaw(lm, 16 - style.side_top), style.side_inset)
    cheek_l = (top_l + wing_l) / 2 - [0, style.bulge * unit]
    cheek_r = (top_r + wing_r) / 2 - [0, style.bulge * unit]
    side_l = inset(_jaw(lm, style.side_top + 1.6), style.side_inset * 1.2)
    side_r = inset(_jaw(lm, 16 - style.side_top - 1.6), style.side_inset * 1.2)
    # Under the chin: jaw points pushed outward (away from the nose tip) by the margin.
    centre = np.array([cx, lm[33, 1]])
    bottom = []
    for k in range(4, 13):
        d = lm[k] - centre
        margin = style.chin_margin * unit * (0.4 + 0.6 * np.exp(-((k - 8) / 3.0) ** 2))
        p = lm[k] + d / max(np.linalg.norm(d), 1e-6) * margin
        if k in (4, 12):
            p = inset(p, style.side_inset)
        if k == 8 and style.kind == "kn95":
            p = p + [0, 3 * unit]  # the fold of a KN95 makes a point under the chin
        bottom.append(p)
    bottom = np.array(bottom)
    # On a turned face the jaw line can come close to the mouth: keep the sides outside mouth and nose.
    left_limit = min(lm[48, 0], lm[31, 0]) - 6 * unit
    right_limit = max(lm[54, 0], lm[35, 0]) + 6 * unit
    for p in (top_l, side_l, bottom[0], bottom[1]):
        p[0] = min(p[0], left_limit)
    for p in (top_r, side_r, bottom[-1], bottom[-2]):
        p[0] = max(p[0], right_limit)
    # Keep the side edge outside the upper bottom points, so the outline never folds on itself.
    side_l[1] = min(side_l[1], bottom[0, 1] - 4 * unit)
    side_r[1] = min(side_r[1], bottom[-1, 1] - 4 * unit)
    top_ctrl = np.array([top_l, cheek_l, wing_l, nose_top, wing_r, cheek_r, top_r])
    bottom_ctrl = np.vstack([side_l, bottom, side_r])  # left to right
    # One closed outline: the top edge left to right, then down the right side and back along the bottom.
    ring = np.vstack([top_ctrl, bottom_ctrl[::-1]])
    polygon = _catmull_rom(ring, closed=True)
    n_top = (len(top_ctrl) - 1) * 12 + 1
    top = polygon[:n_top]
    start = len(top_ctrl) * 12
    bottom_line = np.vstack([polygon[start:], polygon[:1]])[::-1]
    return _Outline(polygon, top, bottom_line, unit, cx, nose_top,
                    np.array([top_l, side_l, top_r, side_r]))


def _fill(polygon: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased coverage (float (S, S), 0..1) of a polygon, filled at 4x and averaged down."""
    big = np.zeros((size * _SUPERSAMPLE, size * _SUPERSAMPLE), np.uint8)
    pts = np.round((polygon + 0.5) * _SUPERSAMPLE - 0.5).astype(np.int32)
    cv2.fillPoly(big, [pts], 255, lineType=cv2.LINE_8)
    return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _stroke(curves: list[np.ndarray], size: int, thickness: float) -> np.ndarray:
    big = np.zeros((size * _SUPERSAMPLE, size * _SUPERSAMPLE), np.uint8)
    for c in curves:
        pts = np.round((c + 0.5) * _SUPERSAMPLE - 0.5).astype(np.int32)
        cv2.polylines(big, [pts], False, 255, thickness=max(1, int(round(thickness * _SUPERSAMPLE))),
                      lineType=cv2.LINE_AA)
    return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _edge_of(curve: np.ndarray, xs: np.ndarray) -> np.ndarray:
    order = np.argsort(curve[:, 0])
    return np.interp(xs, curve[order, 0], curve[order, 1])


def _smooth(x: np.ndarray, edge0: float, edge1: float) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0, 1)
    return t * t * (3 - 2 * t)


# ------------------------------------------------------------------------------------------------ texture
def _pattern(style: MaskStyle, fx: np.ndarray, fy: np.ndarray, unit: float) -> np.ndarray:
    """Share of the print colour (0..1) at fabric coordinates (fx, fy) in image pixels."""
    period = style.pattern_scale * unit
    a = np.radians(style.pattern_angle)
    px, py = fx * np.cos(a) + fy * np.sin(a), -fx * np.sin(a) + fy * np.cos(a)
    aa = 0.7  # a pixel's worth of edge softness, in pixels
    if style.pattern == "stripes":
        d = np.abs(((py / period) % 1.0) - 0.5) * period  # distance to the stripe centre
        return 1 - _smooth(d, period * 0.18 - aa, period * 0.18 + aa)
    if style.pattern == "dots":
        row = np.floor(py / period)
        qx = px + (row % 2) * period / 2
        dx = ((qx / period) % 1.0 - 0.5) * period
        dy = ((py / period) % 1.0 - 0.5) * period
        return 1 - _smooth(np.hypot(dx, dy), period * 0.22 - aa, period * 0.22 + aa)
    if style.pattern == "checks":
        big = period * 1.8
        dxs = np.abs(((px / big) % 1.0) - 0.5) * big
        dys = np.abs(((py / big) % 1.0) - 0.5) * big
        band_x = 1 - _smooth(dxs, big * 0.22 - aa, big * 0.22 + aa)
        band_y = 1 - _smooth(dys, big * 0.22 - aa, big * 0.22 + aa)
        thin_x = 1 - _smooth(np.abs(dxs - big * 0.42), 0.3, 0.3 + aa)
        thin_y = 1 - _smooth(np.abs(dys - big * 0.42), 0.3, 0.3 + aa)
        return np.clip(0.45 * band_x + 0.45 * band_y + 0.6 * np.maximum(thin_x, thin_y), 0, 1)
    if style.pattern == "motif":  # five-petal flowers on a staggered grid
        cell = period * 1.6
        row = np.floor(py / cell)
        qx = px + (row % 2) * cell / 2
        dx = ((qx / cell) % 1.0 - 0.5) * cell
        dy = ((py / cell) % 1.0 - 0.5) * cell
        r, th = np.hypot(dx, dy), np.arctan2(dy, dx)
        petal = cell * 0.32 * (0.55 + 0.45 * np.abs(np.cos(2.5 * th)))
        flower = 1 - _smooth(r - petal, -aa, aa)
        centre = 1 - _smooth(r, cell * 0.08 - aa, cell * 0.08 + aa)
        return np.clip(flower - 0.6 * centre, 0, 1)
    return np.zeros_like(fx)


def _texture(face: np.ndarray, lm: np.ndarray, style: MaskStyle, out: _Outline, body: np.ndarray) -> np.ndarray:
    """The mask's colour (float (S, S, 3), 0..1) over the whole image; only read where the mask covers."""
    size = face.shape[0]
    unit = out.unit
    rng = np.random.default_rng(style.seed)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    cols = np.arange(size, dtype=np.float32)
    top = _edge_of(out.top, cols)[None, :]
    bottom = _edge_of(out.bottom, cols)[None, :]
    v = np.clip((ys - top) / np.maximum(bottom - top, 1.0), 0, 1)  # 0 at the top edge, 1 at the bottom edge
    left, right = out.polygon[:, 0].min(), out.polygon[:, 0].max()
    u = np.clip((xs - out.centre_x) / max((right - left) / 2, 1.0), -1.2, 1.2)
    # Distance (px) from the outline inward: hems, rims and seams follow the edge.
    inside = (body > 0.5).astype(np.uint8)
    edge_d = cv2.distanceTransform(np.pad(inside, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]

    base = np.array(style.colour, np.float32) / 255.0
    colour = np.broadcast_to(base, (size, size, 3)).copy()
    if style.pattern != "plain":
        # Fabric coordinates bend with the face: prints curve down towards the sides.
        fy = ys - 10 * unit * u ** 2
        share = _pattern(style, xs, fy, unit)[..., None]
        colour = colour * (1 - share) + np.array(style.colour2, np.float32) / 255.0 * share

    shade = np.ones((size, size), np.float32)
    s = style.shade
    # A cylinder lit from one side, lighter towards the top, a shadow under the chin.
    shade *= 1 - s * (0.16 * u ** 2 - 0.07 * style.light * u)
    shade *= 1 + s * (0.05 - 0.12 * v ** 1.5)
    shade *= 1 - s * 0.18 * _smooth(ys, lm[8, 1] - 4 * unit, lm[8, 1] + 6 * unit)
    # The nose lifts the mask: a highlight on the ridge, a soft shadow under and beside the nose.
    nose_x, tip = float(lm[30, 0]), lm[33]
    ridge = np.exp(-((xs - nose_x) / (6 * unit)) ** 2) * _smooth(ys, out.nose_top[1], out.nose_top[1] + 6 * unit) \
        * (1 - _smooth(ys, tip[1] - 4 * unit, tip[1] + 2 * unit))
    shade *= 1 + s * 0.08 * ridge
    under = np.exp(-(((xs - tip[0]) / (16 * unit)) ** 2 + ((ys - tip[1] - 7 * unit) / (6 * unit)) ** 2))
    shade *= 1 - s * 0.16 * under
    for side in (-1, 1):
        flank = np.exp(-(((xs - nose_x - side * 17 * unit) / (7 * unit)) ** 2
                         + ((ys - (out.nose_top[1] + tip[1]) / 2) / (12 * unit)) ** 2))
        shade *= 1 - s * 0.07 * flank * (1 + 0.5 * side * -style.light)

    if style.kind == "surgical":
        # Three pleats: a sharp dark fold line with a highlight just below it, fading down the pleat.
        v0, v1 = 0.2, 0.86
        pleat = np.clip((v - v0) / (v1 - v0), 0, 1) * 3
        frac = pleat % 1.0
        in_pleats = (v > v0) & (v < v1)
        height_px = np.maximum(bottom - top, 1.0) * (v1 - v0) / 3
        px_from_fold = frac * height_px
        fold = np.exp(-(px_from_fold / (0.9 * unit)) ** 2) * (np.floor(pleat) >= 1)
        shade *= np.where(in_pleats, 1 + s * (0.06 - 0.10 * frac) - 0.22 * fold, 1.0)
        # Hems: a stitched line a few pixels inside the edge, the side hems a little thicker.
        shade *= 1 - 0.12 * np.exp(-((edge_d - 3.5 * unit) / (0.7 * unit)) ** 2)
        shade *= 1 + 0.05 * (edge_d < 3.0 * unit)
    elif style.kind == "cloth":
        shade *= 1 - 0.10 * np.exp(-((edge_d - 2.5 * unit) / (0.8 * unit)) ** 2)  # the edge's seam
    elif style.kind == "n95":
        # A dome: lit in its centre, darker towards the rim; a moulded rim band along the edge.
        cy = float(lm[62, 1])
        r2 = u ** 2 + ((ys - cy) / max((bottom.max() - out.nose_top[1]) / 2, 1.0)) ** 2
        shade *= 1 + s * (0.08 - 0.14 * r2)
        rim = _smooth(edge_d, 3.5 * unit, 5.0 * unit)
        shade *= 0.93 + 0.07 * rim + 0.04 * np.exp(-((edge_d - 1.8 * unit) / (0.9 * unit)) ** 2)
        # A faint horizontal moulding line across the cup.
        shade *= 1 - 0.05 * np.exp(-((ys - (tip[1] + lm[57, 1]) / 2) / (1.2 * unit)) ** 2) * _smooth(1 - np.abs(u), 0.1, 0.4)
    elif style.kind == "kn95":
        # Two panels meeting in a centre seam; one panel faces the light.
        seam_x = nose_x + (lm[8, 0] - nose_x) * np.clip((ys - lm[30, 1]) / max(lm[8, 1] - lm[30, 1], 1), 0, 1)
        side = np.tanh((xs - seam_x) / (3 * unit))
        shade *= 1 + s * 0.07 * side * (style.light if abs(style.light) > 0.2 else 0.5)
        welded = np.exp(-((edge_d - 3.0 * unit) / (0.8 * unit)) ** 2)
        dots = 0.5 + 0.5 * np.cos(2 * np.pi * (xs + ys) / (2.5 * unit))
        shade *= 1 - 0.12 * welded * dots
    if style.seam:
        seam_x = float(lm[27:31, 0].mean())
        seam_x = seam_x + (lm[8, 0] - seam_x) * np.clip((ys - out.nose_top[1]) / max(lm[8, 1] - out.nose_top[1], 1), 0, 1)
        d = xs - seam_x
        shade *= 1 - 0.2 * np.exp(-(d / (0.8 * unit)) ** 2) + 0.05 * np.exp(-((d - 1.6 * unit) / (1.2 * unit)) ** 2)

    colour = colour * shade[..., None]
    # A faint sheen, which multiplicative shading alone cannot give a black fabric.
    sheen = np.exp(-(((xs - out.centre_x + 25 * unit * style.light) / (30 * unit)) ** 2
                     + ((ys - out.nose_top[1] - 22 * unit) / (22 * unit)) ** 2))
    colour = colour + (s * 0.05 * (sheen + ridge))[..., None]
    if style.valve:
        colour = _draw_valve(colour, lm, style, out, xs, ys)
    # Fabric: fine per-pixel grain and a blotchier, blurred one (non-woven paper for surgical and N95 masks).
    grain = rng.normal(0, style.noise, (size, size)).astype(np.float32)
    blotch = cv2.GaussianBlur(rng.normal(0, style.noise * 2.5, (size, size)).astype(np.float32), (0, 0), 1.5 * unit)
    if style.kind == "cloth":
        weave = 0.5 * style.noise * np.sin(np.pi * xs * 1.3 / max(unit, 0.5)) * np.sin(np.pi * ys * 1.3 / max(unit, 0.5))
        grain = grain + weave
    colour = colour * (1 + grain + blotch)[..., None]
    # Match the photo's light: a dim photo dims the mask, and its colour cast tints it a little.
    mean = face.reshape(-1, 3).astype(np.float32).mean(0) / 255.0
    gain = float(np.clip((mean.mean() / 0.45) ** 0.4, 0.65, 1.08))
    cast = mean / max(float(mean.mean()), 1e-3)
    colour = colour * gain * (0.88 + 0.12 * cast)
    colour = cv2.GaussianBlur(colour, (0, 0), 0.45 * max(unit, 0.5))  # as soft as the photo
    return np.clip(colour, 0, 1)


def _draw_valve(colour: np.ndarray, lm: np.ndarray, style: MaskStyle, out: _Outline, xs, ys) -> np.ndarray:
    unit = out.unit
    mouth = lm[48:60].mean(0)
    half = (out.polygon[:, 0].max() - out.polygon[:, 0].min()) / 2
    c = np.array([out.centre_x + style.valve_side * 0.48 * half, mouth[1] - 4 * unit])
    radius = 12 * unit
    r = np.hypot(xs - c[0], ys - c[1])
    disc = 1 - _smooth(r, radius - 0.7, radius + 0.7)
    vc = np.array(style.colour2, np.float32) / 255.0
    # Domed cap, lit from the light's side, with a dark rim and a ring of slots.
    light = 1 + 0.15 * ((xs - c[0]) * style.light - (ys - c[1])) / radius
    ring = np.exp(-((r - 0.62 * radius) / (0.12 * radius)) ** 2)
    slots = ring * (0.5 + 0.5 * np.sign(np.cos(8 * np.arctan2(ys - c[1], xs - c[0]))))
    rim = np.exp(-((r - radius) / (0.12 * radius)) ** 2)
    shade = light * (1 - 0.35 * slots) * (1 - 0.4 * rim)
    valve = vc * shade[..., None]
    # Its shadow on the mask, offset away from the light.
    sh = np.hypot(xs - c[0] + 2 * unit * style.light, ys - c[1] - 2 * unit)
    colour = colour * (1 - 0.25 * (1 - _smooth(sh, radius - 1.5 * unit, radius + 2.5 * unit)))[..., None]
    return colour * (1 - disc[..., None]) + valve * disc[..., None]


def _straps(lm: np.ndarray, out: _Outline) -> list[np.ndarray]:
    """Ear loops: from the mask's side corners to the ear, beside jaw points 0-2 and 14-16."""
    unit = out.unit
    curves = []
    for side, (top, low, ear_hi, ear_lo) in enumerate([(0, 1, 1, 2), (2, 3, 15, 14)]):
        out_dir = -1 if side == 0 else 1
        # Both strands meet behind the ear, which sits just outside the jaw line between points 1 and 2.
        hi = lm[ear_hi] + [out_dir * 3 * unit, 2 * unit]
        lo = lm[ear_lo] + [out_dir * 3 * unit, 5 * unit]
        a = out.corners[top] + [-out_dir * 1.0 * unit, 2 * unit]
        b = out.corners[low] + [-out_dir * 1.0 * unit, -2 * unit]
        for start, end, bend in ((a, hi, -1), (b, lo, 1.5)):
            mid = (start + end) / 2 + [out_dir * 1 * unit, bend * unit]
            curves.append(_catmull_rom(np.array([start, mid, end]), closed=False, samples=16))
    return curves


# ------------------------------------------------------------------------------------------------ the API
def draw_mask(face: np.ndarray, landmarks: np.ndarray, style: MaskStyle) -> tuple[np.ndarray, np.ndarray]:
    """Draw a mask on an aligned face (uint8 (S, S, 3)) from its 68 landmarks (float (68, 2), the face's pixels).

    Returns (the masked face uint8 (S, S, 3), region bool (S, S)): region holds exactly the pixels the mask
    and its straps cover (coverage > 0.5); every other pixel is returned unchanged.
    """
    face = np.asarray(face)
    if face.dtype != np.uint8 or face.ndim != 3 or face.shape[0] != face.shape[1] or face.shape[2] != 3:
        raise ValueError(f"draw_mask expects an aligned uint8 (S, S, 3) face, got {face.dtype} {face.shape}")
    lm = np.asarray(landmarks, np.float64)
    size = face.shape[0]
    out = _outline(lm, style)
    body = _fill(out.polygon, size)
    colour = _texture(face, lm, style, out, body)
    img = face.astype(np.float32) / 255.0
    coverage = body
    if style.straps:
        strap = _stroke(_straps(lm, out), size, max(1.7 * out.unit, 1.0))
        strap_colour = np.clip(np.array(style.colour, np.float32) / 255.0 * 0.8 + 0.04, 0, 1)
        if style.kind in ("n95", "kn95"):
            strap_colour = np.array([0.82, 0.82, 0.8], np.float32) if style.colour[0] > 190 else strap_colour
        img = img * (1 - strap[..., None]) + strap_colour * strap[..., None] * float(np.clip(colour.mean() * 2, 0.6, 1.0))
        coverage = 1 - (1 - body) * (1 - strap)
    blended = img * (1 - body[..., None]) + colour * body[..., None]
    region = coverage > 0.5
    masked = face.copy()
    masked[region] = np.clip(np.round(blended[region] * 255.0), 0, 255).astype(np.uint8)
    return masked, region


def redraw_region(region: np.ndarray, dilate_px: int = REDRAW_DILATE_PX,
                  feather_px: int = REDRAW_FEATHER_PX) -> np.ndarray:
    """The part a completion model redraws: the mask region grown by dilate_px and feathered over feather_px.

    Float (S, S) in 0..1: 1 on the grown region (so no rim of the mask survives), falling to 0 over
    feather_px pixels outside it.
    """
    grown = np.asarray(region, bool).astype(np.uint8)
    if dilate_px > 0:
        k = 2 * int(dilate_px) + 1
        grown = cv2.dilate(grown, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    if feather_px <= 0:
        return grown.astype(np.float32)
    outside = cv2.distanceTransform(1 - grown, cv2.DIST_L2, 5)
    alpha = np.clip(1 - outside / (feather_px + 1), 0, 1)
    return (alpha * alpha * (3 - 2 * alpha)).astype(np.float32)


@dataclass
class MaskAugment:
    """A Dataset transform: ``(face, landmarks) -> (masked face, region)`` with a style drawn per call.

    Each call draws from ``rng`` when given, else from a Generator seeded by ``(seed, index)`` when an index
    is given (the same mask for a sample in every epoch and worker), else from the Generator this holds.
    With probability 1 - p the face is returned unmasked with an empty region.
    """

    styles: Sequence[str] = TRAIN_STYLES
    p: float = 1.0
    seed: int = 0
    height_range: tuple[float, float] = HEIGHT_RANGE
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self):
        sample_style(np.random.default_rng(0), self.styles, self.height_range)  # fail early on unknown names
        self._rng = np.random.default_rng(self.seed)

    def style(self, rng: np.random.Generator) -> MaskStyle | None:
        if self.p < 1.0 and rng.random() >= self.p:
            return None
        return sample_style(rng, self.styles, self.height_range)

    def __call__(self, face: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator | None = None,
                 index: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        if rng is None:
            rng = np.random.default_rng((self.seed, index)) if index is not None else self._rng
        style = self.style(rng)
        if style is None:
            return np.array(face, copy=True), np.zeros(face.shape[:2], bool)
        return draw_mask(face, landmarks, style)


"""Draw the sample packshots: one JPEG per article, in the Kaggle images/0XX/0XXXXXXXXX.jpg layout.

sample_data.py calls write_images; render_product and render_article draw one product and one
colourway, for a look at a single image. Deterministic for a seed (same bytes).
"""
from __future__ import annotations

import math
import os
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, ImageChops, ImageDraw, ImageFilter
from tqdm import tqdm

from fde import artifacts as artifacts_mod
from fde.errors import UserError
from fde.files import atomic_path
from fde.taxonomy import APPEARANCES, COLOURS

# ---------------------------------------------------------------------------------------------
# Images: a packshot per article. A product's silhouette (from its type, with per-product
# proportions) and pattern are drawn once; each colourway fills them with its colour. Shapes are
# in units of the image width: u in [0, 1] left to right, v in [0, 1.5] top to bottom.

MISSING_IMAGE_SHARE = 442 / 105_542
COLOUR_RGB = np.array([[int(c[2][i:i + 2], 16) for i in (0, 2, 4)] for c in COLOURS], dtype=np.float32)
BACKGROUND = (241, 239, 235)
SUPERSAMPLE = 2  # polygons are drawn at twice the size and reduced, for smooth edges


def _mirror(half: list) -> list:
    """Right-half outline (u as offset from the centre line, top to bottom) -> full polygon."""
    right = [(0.5 + du, v) for du, v in half]
    left = [(0.5 - du, v) for du, v in reversed(half)]
    return right + left


def _arc(cu, cv, ru, rv, a0, a1, n=12) -> list:
    """Points on an ellipse arc, angles in degrees (0 = right, 90 = down)."""
    t = np.radians(np.linspace(a0, a1, n))
    return [(cu + ru * math.cos(x), cv + rv * math.sin(x)) for x in t]


def _rect(u0, v0, u1, v1) -> list:
    return [(u0, v0), (u1, v0), (u1, v1), (u0, v1)]


def _hline(u0, u1, v, width=0.8):
    return ("line", [(u0, v), (u1, v)], width)


def _lerp(a, b, t):
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)


def _outfit(parts, lines=(), box=(0.2, 0.3, 0.8, 1.2), overlays=()) -> dict:
    """A drawn shape: shaded parts (polygons, ellipses; shade 0 cuts a hole), seam lines and dots,
    overlays in fixed colours (soles, lenses, buckles), and the garment's bounding box."""
    return {"parts": list(parts), "lines": list(lines), "overlays": list(overlays), "box": box}


def _sleeve(shoulder, armpit, angle, length, cuff, side=1) -> list:
    """A sleeve hanging from the shoulder, angle in degrees from vertical (outwards), as a polygon."""
    a = math.radians(angle)
    d = (side * math.sin(a), math.cos(a))  # along the sleeve
    n = (-side * math.cos(a), math.sin(a))  # across the cuff, towards the body
    end_out = (shoulder[0] + d[0] * length, shoulder[1] + d[1] * length)
    end_in = (end_out[0] + n[0] * cuff, end_out[1] + n[1] * cuff)
    return [shoulder, end_out, end_in, armpit]


SLEEVES = {  # angle from vertical, length, cuff width (each may depend on product proportions p)
    "short": lambda p: (58 - 8 * p["b"], 0.16 + 0.04 * p["b"], 0.12),
    "three": lambda p: (30, 0.36, 0.11),
    "long": lambda p: (16 + 8 * p["b"], 0.5 + 0.05 * p["c"], 0.085),
    "cap": lambda p: (70, 0.07, 0.12),
}


def _upper_body(p, sleeves="short", neck="round", length=1.0, width=1.0, top=0.34) -> dict:
    """Tops, sweaters, shirts, jackets: body, sleeves, neckline, hem."""
    w = 0.215 * width * p["w"]
    sw = w + 0.035
    nw = 0.075 + 0.02 * p["a"]
    hem = top + 0.72 * length * p["l"]
    body = _mirror([(nw, top), (sw, top + 0.035), (w + 0.01, top + 0.2), (w - 0.01, top + 0.42),
                    (w + 0.005, hem - 0.02), (w - 0.005, hem), (0.0, hem + 0.004)])
    parts, lines = [], []
    angle, slen, cuff = SLEEVES[sleeves](p)
    for side in (1, -1):
        sl = _sleeve((0.5 + side * (sw - 0.005), top + 0.03), (0.5 + side * (w - 0.005), top + 0.2),
                     angle, slen, cuff, side)
        parts.append(("poly", sl, 226))
        t = 0.06 if sleeves == "long" else 0.15
        lines.append(("line", [_lerp(sl[1], sl[0], t), _lerp(sl[2], sl[3], t)], 0.8))
    parts.append(("poly", body, 255))
    # the inside of the back, seen through the neckline
    if neck == "v":
        depth = 0.13 + 0.05 * p["c"]
        inside = [(0.5 - nw, top)] + _arc(0.5, top + 0.005, nw, 0.02, 180, 360, 8) + [(0.5 + nw, top),
                                                                                       (0.5, top + depth)]
        edge = [(0.5 - nw - 0.01, top - 0.003), (0.5, top + depth + 0.02), (0.5 + nw + 0.01, top - 0.003)]
    else:
        depth = 0.04 + 0.03 * p["c"] if neck == "round" else 0.02
        inside = _arc(0.5, top, nw, depth, 0, 180, 12) + _arc(0.5, top + 0.004, nw, 0.018, 180, 360, 8)
        edge = _arc(0.5, top, nw + 0.012, depth + 0.014, 0, 180, 12)
    parts.append(("poly", inside, 120))
    lines += [("line", edge, 1.2), _hline(0.5 - w + 0.005, 0.5 + w - 0.005, hem - 0.03)]
    return _outfit(parts, lines, (0.5 - w, top, 0.5 + w, hem))


def _legs(p, top=0.26, length=1.08, hip=0.19, bottom=0.13, crotch=0.3, gap=0.025, waistband=0.04) -> dict:
    """Trousers, shorts, leggings: waistband, hips, two legs with a gap between them."""
    hip *= p["w"]
    hem, cr = top + length, top + crotch
    outer = 0.5 + gap + bottom * 2 + 0.01 * p["a"]  # outer edge of the right leg at the hem
    right = [(0.5, top + waistband), (0.5 + hip, top + waistband), (0.5 + hip + 0.01, cr),
             (outer, hem), (0.5 + gap, hem), (0.5 + 0.004, cr + 0.02), (0.5, cr)]
    left = [(1 - u, v) for u, v in right]
    waist = ("poly", _rect(0.5 - hip, top, 0.5 + hip, top + waistband), 232)
    parts = [("poly", right, 255), ("poly", left, 244), waist]
    lines = [("line", [(0.5, top + waistband), (0.5, cr - 0.02)], 1.0),  # fly, hems
             _hline(0.5 + gap + 0.004, outer - 0.003, hem - 0.025),
             _hline(1 - outer + 0.003, 0.5 - gap - 0.004, hem - 0.025)]
    return _outfit(parts, lines, (0.5 - hip - 0.02, top, 0.5 + hip + 0.02, hem))


def _merge(*shapes) -> dict:
    """Several garments in one picture (a set: top and bottoms)."""
    boxes = np.array([sh["box"] for sh in shapes])
    box = (*boxes[:, :2].min(0), *boxes[:, 2:].max(0))
    return _outfit(sum((sh["parts"] for sh in shapes), []), sum((sh["lines"] for sh in shapes), []), box,
                   sum((sh["overlays"] for sh in shapes), []))


def _transformed(shape: dict, move, k: float = 1.0) -> dict:
    """The shape with every point mapped by move((u, v)), which scales by k; ellipses stay axis-aligned."""
    def geom(kind, g):
        if kind == "ellipse":
            cu, cv = move(((g[0] + g[2]) / 2, (g[1] + g[3]) / 2))
            hu, hv = (g[2] - g[0]) / 2 * k, (g[3] - g[1]) / 2 * k
            return (cu - hu, cv - hv, cu + hu, cv + hv)
        return [move(pt) for pt in g]

    out = {key: [(it[0], geom(it[0], it[1]), it[2]) for it in shape[key]] for key in ("parts", "lines", "overlays")}
    (u0, v0), (u1, v1) = move(shape["box"][:2]), move(shape["box"][2:])
    out["box"] = (min(u0, u1), min(v0, v1), max(u0, u1), max(v0, v1))
    return out


def _scaled(shape: dict, k: float, dv: float = 0.0) -> dict:
    """Shrink a shape about the image centre and move it down (dv > 0) or up."""
    return _transformed(shape, lambda pt: (0.5 + (pt[0] - 0.5) * k, 0.75 + (pt[1] - 0.75) * k + dv), k)


def _rotated(shape: dict, angle: float) -> dict:
    """The shape turned by a small angle (degrees) about the image centre."""
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return _transformed(shape, lambda pt: (0.5 + c * (pt[0] - 0.5) - s * (pt[1] - 0.75),
                                           0.75 + s * (pt[0] - 0.5) + c * (pt[1] - 0.75)))


def _tops(sil, p) -> dict:
    if sil in ("tshirt", "polo"):
        neck = "flat" if sil == "polo" else "round" if p["d"] < 0.7 else "v"
        sh = _upper_body(p, "short", neck)
        if sil == "polo":  # collar and a short button placket
            sh["parts"] += [("poly", [(0.5, 0.36), (0.41, 0.33), (0.44, 0.41)], 236),
                            ("poly", [(0.5, 0.36), (0.59, 0.33), (0.56, 0.41)], 236)]
            sh["lines"] += [("line", [(0.5, 0.37), (0.5, 0.5)], 1.0), ("dots", [(0.5, 0.41), (0.5, 0.46)], 0.008)]
        return sh
    if sil == "top":
        sleeves = ["long", "short", "three", "cap"][int(p["d"] * 4)]
        return _upper_body(p, sleeves, "round" if p["e"] < 0.6 else "flat", length=0.85 + 0.2 * p["f"])
    if sil == "vest":
        w, top = 0.2 * p["w"], 0.46
        hem = top + 0.6 * p["l"]
        strap = 0.012 + 0.02 * p["a"]
        parts = [("poly", [(0.5 + s * 0.085, top + 0.01), (0.5 + s * (0.085 + strap), top + 0.005),
                           (0.5 + s * (0.115 + strap), 0.25), (0.5 + s * 0.115, 0.25)], 230) for s in (1, -1)]
        body = _mirror([(0.07, top), (0.095, top - 0.01), (w - 0.005, top + 0.1), (w, top + 0.3),
                        (w + 0.01, hem), (0.0, hem)])
        parts += [("poly", body, 255), ("poly", _arc(0.5, top - 0.01, 0.082, 0.06 + 0.05 * p["c"], 0, 180, 12), 125)]
        return _outfit(parts, [_hline(0.5 - w, 0.5 + w, hem - 0.03)], (0.5 - w, 0.25, 0.5 + w, hem))
    if sil in ("blouse", "shirt"):
        sleeves = "long" if sil == "shirt" or p["d"] < 0.5 else "three"
        sh = _upper_body(p, sleeves, "v" if sil == "blouse" else "flat", width=1.08 if sil == "blouse" else 1.0)
        if sil == "blouse":
            sh["lines"].append(("dots", [(0.5, 0.52 + 0.09 * i) for i in range(4)], 0.006))
            return sh
        sh["parts"] += [("poly", [(0.5, 0.37), (0.405, 0.325), (0.43, 0.42)], 238),  # collar
                        ("poly", [(0.5, 0.37), (0.595, 0.325), (0.57, 0.42)], 232)]
        sh["lines"] += [("line", [(0.5, 0.38), (0.5, sh["box"][3] - 0.01)], 1.0),
                        ("dots", [(0.5, 0.44 + 0.1 * i) for i in range(6)], 0.007)]
        if p["e"] < 0.6:  # a chest pocket
            sh["lines"].append(("line", [(0.56, 0.48), (0.56, 0.56), (0.64, 0.56), (0.64, 0.48)], 0.8))
        return sh
    if sil in ("sweater", "hoodie", "cardigan"):
        sh = _upper_body(p, "long", "v" if sil == "cardigan" else "round", width=1.1)
        w, hem = sh["box"][2] - 0.5, sh["box"][3]
        sh["parts"].append(("poly", _rect(0.5 - w, hem - 0.06, 0.5 + w, hem + 0.004), 228))  # ribbed hem
        sh["lines"] += [("line", [(0.5 + du, hem - 0.055), (0.5 + du, hem - 0.005)], 0.5)
                        for du in np.linspace(-w + 0.02, w - 0.02, 12)]
        if sil == "hoodie":  # hood behind the neck, its opening, a kangaroo pocket, drawstrings
            sh["parts"].insert(0, ("ellipse", (0.35, 0.2, 0.65, 0.46), 212))
            sh["parts"].append(("ellipse", (0.415, 0.255, 0.585, 0.43), 95))
            pocket = [(0.36, hem - 0.07), (0.39, hem - 0.3), (0.61, hem - 0.3), (0.64, hem - 0.07)]
            sh["lines"] += [("line", pocket, 1.0), ("line", [(0.47, 0.43), (0.465, 0.56)], 1.3),
                            ("line", [(0.53, 0.43), (0.535, 0.56)], 1.3)]
        if sil == "cardigan":
            sh["lines"] += [("line", [(0.5, 0.5), (0.5, hem)], 1.2),
                            ("dots", [(0.515, 0.56 + 0.1 * i) for i in range(5)], 0.009)]
        return sh
    # jackets, coats, blazers
    sh = _upper_body(p, "long", "v", width=1.18, length={"jacket": 0.95, "coat": 1.35, "blazer": 1.05}[sil])
    w, hem = sh["box"][2] - 0.5, sh["box"][3]
    if sil == "jacket":  # stand-up collar, zip, slanted pockets, maybe quilting
        sh["parts"].append(("poly", [(0.41, 0.31), (0.59, 0.31), (0.6, 0.37), (0.4, 0.37)], 224))
        sh["lines"] += [("line", [(0.5, 0.37), (0.5, hem)], 1.6),
                        ("line", [(0.37, 0.72), (0.4, 0.84)], 1.0), ("line", [(0.63, 0.72), (0.6, 0.84)], 1.0)]
        if p["e"] < 0.45:
            sh["lines"] += [_hline(0.5 - w - 0.03, 0.5 + w + 0.03, v, 0.7) for v in np.arange(0.48, hem, 0.11)]
        return sh
    for s in (1, -1):  # lapels
        sh["parts"].append(("poly", [(0.5 + s * 0.075, 0.335), (0.5 + s * 0.13, 0.38), (0.5 + s * 0.09, 0.45),
                                     (0.5 + s * 0.02, 0.66)], 222))
    buttons = [(0.53, 0.72 + 0.12 * i) for i in range(2 if sil == "blazer" else 4)]
    sh["lines"] += [("line", [(0.5, 0.66), (0.5, hem)], 1.2), ("dots", buttons, 0.011),
                    _hline(0.34, 0.43, 0.8, 1.0), _hline(0.57, 0.66, 0.8, 1.0)]
    if sil == "coat" and p["e"] < 0.5:  # a belt
        sh["parts"].append(("poly", _rect(0.5 - w - 0.01, 0.7, 0.5 + w + 0.01, 0.74), 210))
    return sh


def _one_pieces(sil, p) -> dict:
    """Dresses, night gowns, jumpsuits, swimsuits, baby bodysuits: a bodice and what hangs from it."""
    w, top = 0.17 * p["w"], 0.34
    waist = top + 0.3
    parts, lines = [], []
    if sil in ("dress", "nightgown") and p["d"] > 0.5 or sil == "bodysuit":
        sleeves = "short" if sil != "bodysuit" or p["e"] < 0.5 else "long"
        up = _upper_body(p, sleeves, "round", length=0.42 if sil != "bodysuit" else 0.55, width=0.85)
        parts += up["parts"]
        lines += up["lines"][:-1]
        w = 0.215 * 0.85 * p["w"]  # the skirt starts as wide as the bodice
    else:  # straps and a fitted bodice
        parts += [("poly", [(0.5 + s * 0.08, top + 0.06), (0.5 + s * 0.095, top + 0.06),
                            (0.5 + s * 0.115, 0.26), (0.5 + s * 0.1, 0.26)], 228) for s in (1, -1)]
        parts.append(("poly", _mirror([(0.0, top + 0.1), (0.075, top + 0.05), (w, top + 0.09), (w - 0.015, waist),
                                       (w - 0.01, waist + 0.01), (0.0, waist + 0.01)]), 255))
    if sil in ("dress", "nightgown"):
        flare = (0.1 + 0.14 * p["f"]) * (0.6 if sil == "nightgown" else 1.0)
        hem = waist + 0.42 + 0.25 * p["l"]
        skirt = _mirror([(0.0, waist), (w - 0.01, waist), (w + flare * 0.4, waist + 0.25), (w + flare, hem - 0.015),
                         (w + flare - 0.03, hem), (0.0, hem + 0.01)])
        parts.append(("poly", skirt, 248))
        lines += [_hline(0.5 - w + 0.01, 0.5 + w - 0.01, waist, 1.0)]
        lines += [("line", [(0.5 + du * 0.3, waist + 0.12), (0.5 + du, hem - 0.02)], 0.5)  # folds
                  for du in (-0.16, -0.05, 0.07, 0.18)]
        return _outfit(parts, lines, (0.5 - w - flare, 0.26, 0.5 + w + flare, hem))
    if sil == "jumpsuit":
        legs = _legs(p, top=waist - 0.04, length=0.85, hip=w + 0.01, bottom=0.1 + 0.03 * p["f"], crotch=0.25,
                     waistband=0.035)
        box = (0.5 - w - 0.12, 0.26, 0.5 + w + 0.12, waist + 0.81)
        return _outfit(legs["parts"] + parts, lines + legs["lines"], box)
    # swimsuits and bodysuits: narrow at the crotch, with leg openings
    hip = waist + (0.2 if sil == "swimsuit" else 0.12)
    crotch = hip + 0.14
    parts.append(("poly", _mirror([(0.0, waist - 0.06), (w, waist - 0.06), (w + 0.015, hip), (0.06, crotch - 0.01),
                                   (0.045, crotch), (0.0, crotch)]), 255))
    return _outfit(parts, lines, (0.5 - w - 0.02, 0.26, 0.5 + w + 0.02, crotch))


def _bottoms(sil, p) -> dict:
    if sil == "skirt":
        top, w = 0.42, 0.17 * p["w"]
        flare = 0.03 + 0.14 * p["f"]
        hem = top + 0.45 + 0.3 * p["l"]
        body = _mirror([(0.0, top + 0.05), (w, top + 0.05), (w + 0.015, top + 0.2), (w + flare, hem - 0.01),
                        (w + flare - 0.02, hem), (0.0, hem + 0.01)])
        parts = [("poly", body, 255), ("poly", _rect(0.5 - w, top, 0.5 + w, top + 0.05), 230)]
        if p["e"] < 0.5:  # pleats, or a slit
            lines = [("line", [(0.5 + du * 0.4, top + 0.08), (0.5 + du, hem - 0.01)], 0.5) for du in (-0.12, 0.0, 0.12)]
        else:
            lines = [("line", [(0.5 + w * 0.5, top + 0.05), (0.5 + w * 0.5, top + 0.16)], 0.8)]
        return _outfit(parts, lines, (0.5 - w - flare, top, 0.5 + w + flare, hem))
    if sil == "trousers":
        sh = _legs(p, bottom=0.075 + 0.04 * p["f"])
        hip = 0.19 * p["w"]
        sh["lines"] += [("line", _arc(0.5 + hip, 0.3, 0.07, 0.07, 90, 180, 6), 1.0),  # pockets, belt loops
                        ("line", _arc(0.5 - hip, 0.3, 0.07, 0.07, 0, 90, 6), 1.0)]
        sh["lines"] += [("line", [(0.5 + du, 0.26), (0.5 + du, 0.3)], 1.5) for du in (-0.12, 0.0, 0.12)]
        return sh
    if sil == "shorts":
        return _legs(p, top=0.45, length=0.36 + 0.12 * p["l"], hip=0.2, bottom=0.1 + 0.02 * p["f"], crotch=0.27,
                     gap=0.03)
    if sil == "leggings":
        return _legs(p, top=0.24, length=1.12, hip=0.17, bottom=0.045, crotch=0.3, gap=0.02, waistband=0.06)
    if sil == "tights":  # leggings with feet
        sh = _legs(p, top=0.22, length=1.1, hip=0.17, bottom=0.042, crotch=0.32, gap=0.02, waistband=0.05)
        for s in (1, -1):
            cu = 0.5 + s * 0.05
            sh["parts"].append(("ellipse", (cu - 0.045, 1.26, cu + 0.045 + s * 0.04, 1.35), 250))
        return sh
    # dungarees: trousers with a bib and straps
    sh = _legs(p, top=0.5, length=0.85, hip=0.19, bottom=0.12, crotch=0.25)
    straps = [("poly", [(0.5 + s * 0.12, 0.35), (0.5 + s * 0.15, 0.35), (0.5 + s * 0.2, 0.2), (0.5 + s * 0.17, 0.2)],
               226) for s in (1, -1)]
    bib = ("poly", [(0.37, 0.34), (0.63, 0.34), (0.64, 0.52), (0.36, 0.52)], 250)
    pocket = ("line", _rect(0.43, 0.38, 0.57, 0.46) + [(0.43, 0.38)], 0.9)
    return _outfit(straps + [bib] + sh["parts"], sh["lines"] + [pocket], (0.29, 0.2, 0.71, 1.35))


def _underwear(sil, p) -> dict:
    if sil == "briefs":
        w = 0.25 * p["w"]
        body = _mirror([(0.0, 0.6), (w, 0.6), (w - 0.005, 0.68), (w * 0.7, 0.8), (0.11, 0.94), (0.075, 0.99),
                        (0.0, 0.995)])
        return _outfit([("poly", body, 255)], [_hline(0.5 - w, 0.5 + w, 0.63, 0.9)], (0.5 - w, 0.6, 0.5 + w, 1.0))
    if sil == "socks":  # a pair, side by side, the second a little lower
        parts, lines = [], []
        for i, cu in enumerate((0.36, 0.58)):
            top, leg = 0.38 + 0.06 * i, 0.07 + 0.015 * p["w"]
            foot = top + 0.45 + 0.1 * p["l"]
            outline = ([(cu - leg, top), (cu + leg, top), (cu + leg, foot - 0.08), (cu + leg + 0.14, foot - 0.075)]
                       + _arc(cu + leg + 0.14, foot - 0.005, 0.05, 0.07, 270, 450, 8)
                       + [(cu - leg + 0.02, foot + 0.065)] + _arc(cu - leg + 0.02, foot, 0.04, 0.065, 90, 190, 6))
            parts.append(("poly", outline, 255 if i else 240))
            ribs = [cu - leg + 0.01 + k * 0.025 for k in range(int(2 * leg / 0.025))]
            lines += [("line", [(u, top + 0.005), (u, top + 0.07)], 0.6) for u in ribs]
        return _outfit(parts, lines, (0.29, 0.38, 0.84, 1.0))
    # bras and bikini tops: two cups, straps, a band or ties
    parts, lines = [], []
    for s in (1, -1):
        cx = 0.5 + s * 0.115
        if sil == "bra":
            cup = _arc(cx, 0.78, 0.115, 0.1, 0, 180, 14) + [(cx - s * 0.02, 0.62)]
        else:
            cup = [(cx - 0.1, 0.8), (cx + 0.1, 0.8), (cx + s * 0.03, 0.6)]
        strap = [(cx - s * 0.02 - 0.006, 0.62), (cx - s * 0.02 + 0.006, 0.62), (0.5 + s * 0.1 + 0.006, 0.36),
                 (0.5 + s * 0.1 - 0.006, 0.36)]
        parts += [("poly", cup, 255 if s > 0 else 244), ("poly", strap, 226)]
    if sil == "bra":
        parts.append(("poly", [(0.27, 0.8), (0.73, 0.8), (0.72, 0.86), (0.28, 0.86)], 232))
        return _outfit(parts, lines, (0.27, 0.36, 0.73, 0.86))
    lines += [("line", [(0.3, 0.8), (0.12, 0.85)], 1.6), ("line", [(0.7, 0.8), (0.88, 0.85)], 1.6)]
    return _outfit(parts, lines, (0.12, 0.36, 0.88, 0.85))


def _shoes(sil, p) -> dict:
    """Shoes from the side, on a sole in a fixed colour."""
    sole_rgb = (245, 244, 240) if p["e"] < 0.6 else (40, 38, 36)
    sole = [(0.13, 0.92), (0.84, 0.92)] + _arc(0.84, 0.95, 0.04, 0.03, 270, 450, 6) + [(0.13, 0.985), (0.11, 0.95)]
    if sil == "sneaker":
        upper = [(0.14, 0.93), (0.13, 0.76), (0.2, 0.7), (0.34, 0.68), (0.42, 0.64), (0.5, 0.66), (0.7, 0.8),
                 (0.84, 0.86), (0.87, 0.93)]
        laces = [("line", [(0.44 + 0.04 * k, 0.69 + 0.03 * k), (0.41 + 0.04 * k, 0.72 + 0.03 * k)], 1.2)
                 for k in range(5)]
        return _outfit([("poly", upper, 255)], laces + [("line", [(0.2, 0.86), (0.7, 0.9)], 0.8)],
                       (0.11, 0.62, 0.88, 0.985), [("poly", sole, sole_rgb)])
    if sil == "boot":
        upper = [(0.2, 0.93), (0.22, 0.42), (0.48, 0.42), (0.5, 0.7), (0.72, 0.82), (0.85, 0.87), (0.87, 0.93)]
        heel = ("poly", [(0.14, 0.93), (0.27, 0.93), (0.26, 1.02), (0.16, 1.02)], (40, 38, 36))
        lines = [_hline(0.23, 0.47, 0.47, 0.9), ("line", [(0.44, 0.45), (0.46, 0.72)], 1.2)]
        return _outfit([("poly", upper, 255)], lines, (0.14, 0.42, 0.88, 1.02), [("poly", sole, sole_rgb), heel])
    if sil == "sandal":  # a footbed and curved straps
        footbed = ("poly", [(0.12, 0.9), (0.86, 0.9), (0.88, 0.95), (0.12, 0.97)],
                   (196, 160, 112) if p["e"] < 0.5 else sole_rgb)
        parts = [("poly", _arc(cu, 0.9, r, 0.17, 180, 360, 14) + _arc(cu, 0.9, r - 0.035, 0.13, 360, 180, 14),
                  255 - 15 * k) for k, (cu, r) in enumerate(((0.62, 0.15), (0.38, 0.13)))]
        parts.append(("poly", _arc(0.2, 0.9, 0.07, 0.2, 180, 280, 8) + _arc(0.2, 0.9, 0.045, 0.17, 280, 180, 8), 235))
        return _outfit(parts, [], (0.12, 0.7, 0.88, 0.97), [footbed])
    # flat shoes: a low upper with the opening showing the inside
    upper = [(0.14, 0.93), (0.13, 0.8), (0.24, 0.78), (0.42, 0.8), (0.5, 0.78), (0.72, 0.82), (0.85, 0.86),
             (0.87, 0.93)]
    parts = [("poly", upper, 255), ("poly", _arc(0.36, 0.8, 0.17, 0.04, 180, 360, 10), 115)]
    return _outfit(parts, [], (0.12, 0.76, 0.88, 0.955), [("poly", _rect(0.12, 0.93, 0.87, 0.955), sole_rgb)])


def _accessories(sil, p) -> dict:
    metal = (200, 180, 120)
    if sil == "bag":  # a handle (a ring with a hole), the body, maybe a flap and a clasp
        top, bottom = 0.62, 1.05 + 0.1 * p["l"]
        wt, wb = 0.24 * p["w"], 0.28 * p["w"]
        parts = [("ellipse", (0.34, 0.36, 0.66, 0.86), 225), ("ellipse", (0.37, 0.39, 0.63, 0.83), 0),
                 ("poly", [(0.5 - wt, top), (0.5 + wt, top), (0.5 + wb, bottom), (0.5 - wb, bottom)], 255)]
        if p["e"] < 0.5:
            parts.append(("poly", [(0.5 - wt - 0.005, top), (0.5 + wt + 0.005, top), (0.5 + wt, top + 0.18),
                                   (0.5, top + 0.22), (0.5 - wt, top + 0.18)], 236))
        return _outfit(parts, [_hline(0.5 - wt, 0.5 + wt, top + 0.03, 0.9)], (0.5 - wb, 0.36, 0.5 + wb, bottom),
                       [("ellipse", (0.49, top + 0.19, 0.51, top + 0.22), metal)])
    if sil == "beanie":
        cuff = [(0.24, 0.82), (0.76, 0.82), (0.77, 0.98), (0.23, 0.98)]
        parts = [("ellipse", (0.25, 0.5, 0.75, 1.1), 255), ("poly", cuff, 230)]
        if p["e"] < 0.5:  # a pompom
            parts.insert(0, ("ellipse", (0.42, 0.42, 0.58, 0.56), 240))
        ribs = [("line", [(0.26 + 0.02 * k, 0.83), (0.26 + 0.02 * k, 0.97)], 0.6) for k in range(26)]
        return _outfit(parts, ribs, (0.23, 0.42, 0.77, 0.98))
    if sil == "cap":
        parts = [("poly", _arc(0.47, 0.9, 0.22, 0.3, 180, 360, 16), 255),
                 ("poly", [(0.6, 0.86), (0.9, 0.9), (0.88, 0.95), (0.6, 0.92)], 226)]
        seams = [("line", [(0.47, 0.6), (0.47, 0.9)], 0.8), ("line", [(0.33, 0.66), (0.4, 0.9)], 0.6),
                 ("line", [(0.61, 0.66), (0.54, 0.9)], 0.6)]
        return _outfit(parts, seams, (0.25, 0.6, 0.9, 0.95))
    if sil == "scarf":  # a long folded band with fringes
        parts = [("poly", [(0.36, 0.2), (0.64, 0.2), (0.66, 1.28), (0.34, 1.28)], 255),
                 ("poly", [(0.36, 0.2), (0.64, 0.2), (0.7, 0.55), (0.42, 0.62)], 236)]
        fringes = [("line", [(0.35 + 0.02 * k, 1.28), (0.35 + 0.02 * k, 1.34)], 0.8) for k in range(16)]
        return _outfit(parts, fringes, (0.34, 0.2, 0.7, 1.28))
    if sil == "earrings":  # two hoops on hooks
        parts, lines = [], []
        r = 0.07 + 0.03 * p["w"]
        for cu in (0.37, 0.63):
            parts += [("ellipse", (cu - r, 0.7 - r, cu + r, 0.7 + r), 255),
                      ("ellipse", (cu - r * 0.72, 0.7 - r * 0.72, cu + r * 0.72, 0.7 + r * 0.72), 0)]
            lines.append(("line", [(cu, 0.7 - r), (cu, 0.7 - r - 0.05)], 1.2))
        return _outfit(parts, lines, (0.27, 0.55, 0.73, 0.8))
    if sil == "necklace":  # a thin chain and a pendant
        parts = [("ellipse", (0.24, 0.3, 0.76, 0.98), 255), ("ellipse", (0.255, 0.315, 0.745, 0.965), 0),
                 ("ellipse", (0.46, 0.95, 0.54, 1.05), 240)]
        return _outfit(parts, [], (0.24, 0.3, 0.76, 1.05))
    if sil == "hairband":  # the top half of a thick ring
        parts = [("ellipse", (0.22, 0.45, 0.78, 1.15), 255), ("ellipse", (0.26, 0.5, 0.74, 1.15), 0),
                 ("poly", _rect(0.2, 0.82, 0.8, 1.2), 0)]
        return _outfit(parts, [], (0.22, 0.45, 0.78, 0.82))
    if sil == "sunglasses":  # frames in the article's colour, dark lenses
        parts = [("ellipse", (0.19, 0.66, 0.49, 0.88), 255), ("ellipse", (0.51, 0.66, 0.81, 0.88), 255),
                 ("poly", _rect(0.47, 0.7, 0.53, 0.72), 240),
                 ("poly", [(0.19, 0.7), (0.12, 0.66), (0.12, 0.68), (0.19, 0.73)], 215),
                 ("poly", [(0.81, 0.7), (0.88, 0.66), (0.88, 0.68), (0.81, 0.73)], 215)]
        tint = (52, 50, 48)
        lenses = [("ellipse", (0.21, 0.68, 0.47, 0.86), tint), ("ellipse", (0.53, 0.68, 0.79, 0.86), tint)]
        return _outfit(parts, [], (0.12, 0.66, 0.88, 0.88), lenses)
    if sil == "belt":  # a strap with holes and a metal buckle
        buckle = [("poly", _rect(0.1, 0.66, 0.22, 0.82), metal), ("poly", _rect(0.125, 0.69, 0.195, 0.79), BACKGROUND)]
        holes = [("dots", [(0.5 + 0.07 * k, 0.74) for k in range(5)], 0.007)]
        return _outfit([("poly", _rect(0.2, 0.7, 0.9, 0.78), 255)], holes, (0.2, 0.7, 0.9, 0.78), buckle)
    if sil == "gloves":  # two mittens with thumbs and cuffs
        parts = []
        for cu in (0.36, 0.64):
            parts += [("ellipse", (cu - 0.12, 0.45, cu + 0.12, 0.95), 255),
                      ("ellipse", (cu + 0.05, 0.62, cu + 0.17, 0.8), 238),
                      ("poly", _rect(cu - 0.11, 0.9, cu + 0.11, 1.05), 228)]
        return _outfit(parts, [], (0.24, 0.45, 0.81, 1.05))
    if sil == "umbrella":  # folded, with a handle
        return _outfit([("poly", [(0.5, 0.25), (0.58, 1.05), (0.42, 1.05)], 255)],
                       [("line", [(0.5, 0.3), (0.5, 1.0)], 0.6)], (0.42, 0.25, 0.58, 1.05),
                       [("poly", _rect(0.49, 1.05, 0.51, 1.2), (60, 50, 40))])
    # a box: an item of unknown type
    return _outfit([("poly", _rect(0.25, 0.55, 0.75, 1.0), 255), ("poly", _rect(0.23, 0.5, 0.77, 0.6), 232)],
                   [], (0.23, 0.5, 0.77, 1.0))


def _shape(silhouette: str, p: dict) -> dict:
    """Parts, seams and fixed-colour details of a product type; p holds the product's proportions."""
    sil = silhouette
    if sil in ("tshirt", "polo", "top", "vest", "blouse", "shirt", "sweater", "hoodie", "cardigan", "jacket", "coat",
               "blazer"):
        return _tops(sil, p)
    if sil in ("dress", "nightgown", "jumpsuit", "swimsuit", "bodysuit"):
        return _one_pieces(sil, p)
    if sil in ("set", "pyjama"):  # a small top above small bottoms
        top = _scaled(_upper_body(p, "short" if sil == "set" else "long", "round"), 0.62, dv=-0.3)
        bottom = _legs(p, length=0.55 if sil == "set" else 1.0, bottom=0.1 if sil == "set" else 0.085)
        return _merge(top, _scaled(bottom, 0.62, dv=0.28))
    if sil in ("skirt", "trousers", "shorts", "leggings", "tights", "dungarees"):
        return _bottoms(sil, p)
    if sil in ("briefs", "bikini", "bra", "socks"):
        return _underwear(sil, p)
    if sil in ("sneaker", "boot", "sandal", "flat"):
        return _shoes(sil, p)
    return _accessories(sil, p)


def _pattern(kind: str, box_px, size, rng) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(ink, texture) arrays of the image size: ink mixes in the second colour, texture shades."""
    w, h = size
    x0, y0, x1, y1 = box_px
    bw = max(x1 - x0, 8)
    yy, xx = _grid(size)
    u, v = (xx - x0) / bw, (yy - y0) / bw  # garment coordinates, in garment widths
    ink = tex = None
    if kind == "stripe":
        period = rng.uniform(0.06, 0.16)
        coord = v if rng.random() < 0.8 else u
        ink = ((coord / period + rng.random()) % 1.0 < rng.uniform(0.3, 0.55)).astype(np.float32)
    elif kind == "dot":
        period = rng.uniform(0.07, 0.13)
        gu, gv = u / period, v / period
        gu = gu + 0.5 * (np.floor(gv) % 2)
        d = np.hypot(gu - np.round(gu), gv - np.round(gv))
        ink = (d < rng.uniform(0.16, 0.3)).astype(np.float32)
    elif kind == "check":
        period = rng.uniform(0.08, 0.18)
        a = ((u / period) % 1.0 < 0.5).astype(np.float32)
        b = ((v / period) % 1.0 < 0.5).astype(np.float32)
        ink = 0.45 * a + 0.45 * b
    elif kind in ("jacquard",):
        period = rng.uniform(0.12, 0.2)
        d = np.abs((u / period) % 1.0 - 0.5) + np.abs((v / period) % 1.0 - 0.5)
        ink = ((d > 0.3) & (d < 0.42)).astype(np.float32)
    elif kind in ("allover", "embroidery", "placement", "frontprint", "mixed", "lace"):
        img = Image.new("L", size, 0)
        draw = ImageDraw.Draw(img)
        if kind in ("allover", "mixed", "lace"):
            n = int(rng.uniform(80, 160) * (w * h) / (384 * 576)) + 20
            motif = rng.integers(0, 3)
            r_base = bw * rng.uniform(0.025, 0.05)
            ymax = y0 + (y1 - y0) * (0.45 if kind == "mixed" else 1.0)
            for _ in range(n):
                cx, cy = rng.uniform(x0, x1), rng.uniform(y0, ymax)
                r = r_base * rng.uniform(0.7, 1.3)
                if kind == "lace":
                    draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=255, width=max(1, int(r / 4)))
                elif motif == 0:  # flowers
                    for k in range(5):
                        a = 2 * np.pi * k / 5
                        px, py = cx + r * 0.8 * np.cos(a), cy + r * 0.8 * np.sin(a)
                        draw.ellipse((px - r * 0.5, py - r * 0.5, px + r * 0.5, py + r * 0.5), fill=255)
                    draw.ellipse((cx - r * 0.3, cy - r * 0.3, cx + r * 0.3, cy + r * 0.3), fill=140)
                elif motif == 1:  # leaves
                    a = rng.uniform(0, np.pi)
                    along = (r * 1.4 * np.cos(a), r * 1.4 * np.sin(a))
                    across = (-r * 0.45 * np.sin(a), r * 0.45 * np.cos(a))
                    draw.polygon([(cx + along[0], cy + along[1]), (cx + across[0], cy + across[1]),
                                  (cx - along[0], cy - along[1]), (cx - across[0], cy - across[1])], fill=255)
                else:  # blobs and spots
                    draw.ellipse((cx - r, cy - r * 0.7, cx + r, cy + r * 0.7), fill=int(rng.choice([160, 255])))
        else:
            # a motif on the chest (front print) or a small one off-centre (placement, embroidery)
            cx = (x0 + x1) / 2 if kind == "frontprint" else rng.uniform(x0 + bw * 0.3, x1 - bw * 0.3)
            cy = y0 + (y1 - y0) * (0.3 if kind == "frontprint" else rng.uniform(0.2, 0.6))
            r = bw * (0.22 if kind == "frontprint" else 0.1)
            motif = rng.integers(0, 4)
            if motif == 0:
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
                draw.ellipse((cx - r * 0.6, cy - r * 0.6, cx + r * 0.6, cy + r * 0.6), fill=0)
            elif motif == 1:  # a star
                pts = [(cx + (r if k % 2 == 0 else r * 0.45) * np.cos(np.pi * k / 5 - np.pi / 2),
                        cy + (r if k % 2 == 0 else r * 0.45) * np.sin(np.pi * k / 5 - np.pi / 2)) for k in range(10)]
                draw.polygon(pts, fill=255)
            elif motif == 2:  # text-like bars
                for k in range(3):
                    wk = r * rng.uniform(1.2, 2.0)
                    y = cy - r + k * r * 0.75
                    draw.rectangle((cx - wk, y, cx + wk, y + r * 0.45), fill=255)
            else:  # a heart
                draw.ellipse((cx - r, cy - r * 0.8, cx, cy + r * 0.2), fill=255)
                draw.ellipse((cx, cy - r * 0.8, cx + r, cy + r * 0.2), fill=255)
                draw.polygon([(cx - r * 0.97, cy - r * 0.15), (cx + r * 0.97, cy - r * 0.15), (cx, cy + r * 1.05)],
                             fill=255)
        ink = np.asarray(img, dtype=np.float32) / 255.0
    elif kind == "blocking":
        cut = rng.uniform(0.4, 0.65)
        ink = (((yy - y0) / max(y1 - y0, 1)) > cut).astype(np.float32)
    elif kind in ("melange", "chambray", "denim", "structure", "glitter", "metallic", "treatment"):
        noise = rng.normal(0, 1, (h, w)).astype(np.float32)
        if kind == "melange":
            streak = np.repeat(rng.normal(0, 1, (h, 1)), w, axis=1)
            tex = 0.9 + 0.05 * noise + 0.03 * streak
        elif kind == "chambray":
            tex = 0.9 + 0.07 * noise
        elif kind == "denim":
            twill = np.sin((xx + yy) * 2 * np.pi / 4.0)
            fade = np.exp(-(((xx - (x0 + x1) / 2) / (bw * 0.4)) ** 2)) * 0.12
            tex = 0.8 + 0.05 * twill + 0.06 * noise + fade
        elif kind == "structure":
            tex = 0.88 + 0.08 * (np.sin(xx * 2 * np.pi / max(3, w / 60)) > 0)
        elif kind == "glitter":
            tex = np.where(noise > 2.3, 1.15, 0.92)
        elif kind == "metallic":
            tex = 0.75 + 0.3 * (0.5 + 0.5 * np.sin((u + v) * 4.0))
        else:  # treatment: washed, lighter at the top
            tex = 0.82 + 0.15 * (1 - np.clip((yy - y0) / max(y1 - y0, 1), 0, 1))
        tex = np.clip(tex, 0, 1.15)
    return ink, tex


def _colours_for(rgb: np.ndarray, kind: str, accent: np.ndarray) -> tuple[tuple, tuple]:
    """Main and second colour (light on dark or dark on light, or the product's accent)."""
    lum = float(rgb @ np.array([0.299, 0.587, 0.114]))
    if kind in ("stripe", "dot", "check", "jacquard", "lace"):
        second = np.array([246, 244, 238]) if lum < 140 else np.array([32, 36, 52])
        second = 0.7 * second + 0.3 * accent if kind != "lace" else second
    elif kind in ("allover", "mixed", "frontprint", "placement", "embroidery", "blocking"):
        second = accent if abs(float(accent @ np.array([0.299, 0.587, 0.114])) - lum) > 60 else (
            np.array([244, 242, 236]) if lum < 140 else np.array([30, 30, 34]))
    else:
        second = rgb
    return tuple(int(x) for x in np.clip(rgb, 0, 255)), tuple(int(x) for x in np.clip(second, 0, 255))


def _draw_items(draw, items, scale, fill_for, offset=(0.0, 0.0)):
    """Draw shape items (polygons, ellipses) scaled to pixels; fill_for(value) gives the fill."""
    ox, oy = offset
    for kind, geom, val in items:
        fill = fill_for(val)
        if kind == "poly":
            draw.polygon([(x * scale + ox, y * scale + oy) for x, y in geom], fill=fill)
        elif kind == "ellipse":
            u0, v0, u1, v1 = geom
            draw.ellipse([u0 * scale + ox, v0 * scale + oy, u1 * scale + ox, v1 * scale + oy], fill=fill)


PAD = 0.08  # products are drawn on a canvas this much larger on each side, to frame each article


def _canvas(size):
    w, h = size
    return (round(w * (1 + 2 * PAD)), round(h * (1 + 2 * PAD))), (PAD * w, PAD * h)


_GRIDS: dict = {}


def _grid(size):
    """Pixel coordinates (yy, xx) of a canvas, cached per size."""
    if size not in _GRIDS:
        _GRIDS[size] = np.mgrid[0:size[1], 0:size[0]].astype(np.float32)
    return _GRIDS[size]


def render_product(silhouette: str, pattern: str, size: tuple[int, int], rng: np.random.Generator) -> dict:
    """Everything colour-independent of a product's packshot: mask, shading, pattern, shadow, lines."""
    w, h = size
    p = {k: float(rng.random()) for k in "abcdef"}
    p["w"], p["l"] = rng.uniform(0.9, 1.1), rng.uniform(0.9, 1.1)
    shape = _rotated(_shape(silhouette, p), rng.uniform(-2.5, 2.5))
    (cw, ch), offset = _canvas(size)
    ss = SUPERSAMPLE
    big_offset = (offset[0] * ss, offset[1] * ss)
    mask, shade = Image.new("L", (cw * ss, ch * ss), 0), Image.new("L", (cw * ss, ch * ss), 0)
    _draw_items(ImageDraw.Draw(mask), shape["parts"], w * ss, lambda v: 255 if v > 0 else 0, big_offset)
    _draw_items(ImageDraw.Draw(shade), shape["parts"], w * ss, lambda v: v, big_offset)
    mask, shade = mask.reduce(ss), shade.reduce(ss)
    # soft light: darker towards the outline and the bottom, a highlight top-left (blurs are
    # done at a quarter of the size: they are smooth anyway)
    small = mask.reduce(4)
    soft = small.filter(ImageFilter.GaussianBlur(max(0.5, w / 160))).resize((cw, ch), Image.BILINEAR)
    yy, xx = _grid((cw, ch))
    light = 1.0 - 0.12 * (yy / ch) - 0.06 * (xx / cw)
    shading = (np.asarray(shade, np.float32) / 255.0) * (0.7 + 0.3 * np.asarray(soft, np.float32) / 255.0) * light
    box = (shape["box"][0] * w + offset[0], shape["box"][1] * w + offset[1],
           shape["box"][2] * w + offset[0], shape["box"][3] * w + offset[1])
    ink, tex = _pattern(pattern, box, (cw, ch), rng)
    if tex is not None:
        shading = shading * tex
    # a soft shadow below and right of the garment, on the off-white background
    shadow = Image.new("L", small.size, 0)
    shadow.paste(small, (round(w * 0.02 / 4), round(w * 0.03 / 4)))
    shadow = shadow.filter(ImageFilter.GaussianBlur(max(0.5, w / 120))).resize((cw, ch), Image.BILINEAR)
    backdrop = ImageChops.multiply(_background((cw, ch)), shadow.point(lambda x: 255 - int(0.3 * x)).convert("RGB"))
    return {
        "size": size, "offset": offset, "mask": mask, "backdrop": backdrop,
        "shading": Image.fromarray(np.clip(shading * 255, 0, 255).astype(np.uint8)).convert("RGB"),
        "ink": None if ink is None else Image.fromarray(np.clip(ink * 255, 0, 255).astype(np.uint8)),
        "lines": shape["lines"], "overlays": shape["overlays"],
        "accent": COLOUR_RGB[int(rng.integers(0, len(COLOURS)))], "pattern": pattern,
    }


_BACKGROUNDS: dict = {}


def _background(size):
    """The off-white studio background with a faint vertical gradient (cached per size)."""
    if size not in _BACKGROUNDS:
        w, h = size
        grad = np.linspace(1.0, 0.965, h, dtype=np.float32)[:, None, None]
        _BACKGROUNDS[size] = Image.fromarray((np.array(BACKGROUND, np.float32)[None, None, :] * grad
                                              * np.ones((1, w, 1), np.float32)).astype(np.uint8))
    return _BACKGROUNDS[size]


def render_article(product: dict, rgb: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """One colourway: fill the product's shape with the colour, draw seams, frame it with a little jitter."""
    w, h = product["size"]
    canvas = product["mask"].size
    ox, oy = product["offset"]
    main, second = _colours_for(rgb + rng.normal(0, 5, 3), product["pattern"], product["accent"])
    garment = Image.new("RGB", canvas, main)
    if product["ink"] is not None:
        garment = Image.composite(Image.new("RGB", canvas, second), garment, product["ink"])
    img = Image.composite(ImageChops.multiply(garment, product["shading"]), product["backdrop"], product["mask"])
    # seams, hems and buttons in a darker (or, on dark colours, lighter) shade; line width varies
    draw = ImageDraw.Draw(img)
    lum = 0.299 * main[0] + 0.587 * main[1] + 0.114 * main[2]
    seam = tuple(int(c * 0.62) for c in main) if lum > 70 else tuple(min(255, c + 45) for c in main)
    width = max(1, round(w / 190 * rng.uniform(0.8, 1.4)))
    for kind, pts, wf in product["lines"]:
        if kind == "line":
            draw.line([(x * w + ox, y * w + oy) for x, y in pts], fill=seam, width=max(1, round(width * wf)),
                      joint="curve")
        else:
            for x, y in pts:
                r = wf * w
                draw.ellipse((x * w + ox - r, y * w + oy - r, x * w + ox + r, y * w + oy + r), fill=seam)
    _draw_items(draw, product["overlays"], w, lambda v: tuple(int(c) for c in v), (ox, oy))
    # per-article framing: a little zoom and shift of the window cut from the larger canvas
    k = rng.uniform(0.94, 1.06)
    cx, cy = canvas[0] / 2 + rng.uniform(-0.035, 0.035) * w, canvas[1] / 2 + rng.uniform(-0.03, 0.03) * h
    half_w, half_h = w / (2 * k), h / (2 * k)
    box = (max(0.0, cx - half_w), max(0.0, cy - half_h), min(canvas[0], cx + half_w), min(canvas[1], cy + half_h))
    return img.resize((w, h), Image.BILINEAR, box=box)


def _image_job(job) -> int:
    """Draw every colourway of one product and save them (runs in a worker process)."""
    size, seed, product_code, silhouette, pattern, arts = job
    product = render_product(silhouette, pattern, size, np.random.default_rng([seed, 7, product_code]))
    for article_id, colour, path in arts:
        img = render_article(product, COLOUR_RGB[colour], np.random.default_rng([seed, 8, article_id]))
        with atomic_path(Path(path)) as tmp:
            img.save(tmp, format="JPEG", quality=88)
    return len(arts)


def image_plan(articles: pl.DataFrame, seed: int) -> np.ndarray:
    """Which articles get an image: all but ~0.4% (at least one missing in a catalogue of 100+)."""
    rng = np.random.default_rng([seed, 3])
    missing = rng.random(articles.height) < MISSING_IMAGE_SHARE
    if articles.height >= 100 and not missing.any():
        missing[rng.integers(0, articles.height)] = True
    return ~missing


def write_images(art: artifacts_mod.Artifacts, articles: pl.DataFrame, size: tuple[int, int], seed: int,
                 force: bool, show_progress: bool = True, workers: int | None = None) -> int:
    """Draw the packshots into the Kaggle layout; returns how many were written."""
    has_image = image_plan(articles, seed)
    ids = articles["article_id"].to_numpy()
    paths = [art.image(a) for a in ids]
    if not force:
        clash = next((p for p in paths if p.exists()), None)
        if clash is not None:
            raise UserError(f"{clash} already exists and sample_data.py never overwrites images: "
                            "use --force to replace them (or --no-images, or another --images-dir)")
    for p, keep in zip(paths, has_image):
        if not keep and p.exists():  # stale image of an article that has none in this sample
            p.unlink()
    kinds = np.array([a[3] for a in APPEARANCES])[articles["_appearance"].to_numpy()]
    frame = pl.DataFrame({"article_id": ids, "product_code": articles["product_code"].to_numpy(),
                          "silhouette": articles["_silhouette"].to_numpy(), "pattern": kinds,
                          "colour": articles["_colour"].to_numpy(), "path": [str(p) for p in paths],
                          "keep": has_image}).filter(pl.col("keep"))
    # one job per product (and pattern: a striped colourway of a solid product has its own)
    jobs = [(tuple(size), seed, int(g["product_code"][0]), g["silhouette"][0], g["pattern"][0],
             list(zip(g["article_id"].to_list(), g["colour"].to_list(), g["path"].to_list())))
            for g in frame.partition_by(["product_code", "pattern"], maintain_order=True)]
    workers = workers or min(4, os.cpu_count() or 1)
    bar = tqdm(total=frame.height, desc="images", unit="img", disable=not show_progress)
    if workers > 1 and len(jobs) > 50:
        with get_context("fork").Pool(workers) as pool:
            for n in pool.imap_unordered(_image_job, jobs, chunksize=8):
                bar.update(n)
    else:
        for job in jobs:
            bar.update(_image_job(job))
    bar.close()
    return frame.height

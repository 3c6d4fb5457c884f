"""Drawn product photos for the visual tests: flat garment packshots whose look is known by construction."""
from pathlib import Path

from PIL import Image, ImageDraw

from fde.artifacts import Artifacts

SHAPES = ("dress", "trousers", "top")
COLOURS = {10: (200, 30, 40), 11: (30, 40, 110)}  # colourway digit -> RGB: red, navy
BUILDINGS = {"palace", "monastery", "pagoda", "stupa", "bell cote", "church", "boathouse", "birdhouse",
             "mosque", "dome", "castle", "triumphal arch"}


def draw_garment(path: Path, shape: str, colour, shift: int = 0, size=(200, 300)) -> None:
    """A flat packshot: one garment silhouette in one colour on an off-white background."""
    w, h = size
    im = Image.new("RGB", size, (246, 246, 244))
    d = ImageDraw.Draw(im)
    s = shift
    if shape == "dress":
        d.polygon([(80 + s, 40), (120 + s, 40), (170 + s, 270), (30 + s, 270)], fill=colour)
    elif shape == "trousers":
        d.rectangle([55 + s, 40, 145 + s, 90], fill=colour)
        d.rectangle([55 + s, 90, 95 + s, 280], fill=colour)
        d.rectangle([105 + s, 90, 145 + s, 280], fill=colour)
    else:
        d.rectangle([20 + s, 50, 180 + s, 110], fill=colour)
        d.rectangle([60 + s, 50, 140 + s, 200], fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, quality=90)


def article_id(shape: int, variant: int, colour: int) -> int:
    """product_code = (1|2|3)08775 + variant; colourways of one product share it."""
    return ((shape + 1) * 100_000 + 8775 + variant) * 1000 + colour


def draw_catalogue(root: Path) -> tuple[Artifacts, list[int]]:
    """12 drawn articles in 3 folders: 3 shapes x 2 near-identical products x 2 colourways."""
    artifacts = Artifacts(root / "data", root / "images")
    ids = []
    for shape_index, shape in enumerate(SHAPES):
        for variant in (0, 1):
            for colour, rgb in COLOURS.items():
                aid = article_id(shape_index, variant, colour)
                draw_garment(artifacts.image(aid), shape, rgb, shift=6 * variant)
                ids.append(aid)
    return artifacts, sorted(ids)


def add_broken_files(artifacts: Artifacts) -> dict:
    """A truncated JPEG, an empty file and a file whose name is not an article id."""
    truncated, empty = 408775010, 408775011
    draw_garment(artifacts.image(truncated), "dress", (0, 120, 0))
    data = artifacts.image(truncated).read_bytes()
    artifacts.image(truncated).write_bytes(data[: len(data) // 2])
    artifacts.image(empty).write_bytes(b"")
    (artifacts.image(truncated).parent / "notes.jpg").write_bytes(b"not an article")
    return {"truncated": truncated, "empty": empty}

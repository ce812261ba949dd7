"""Synthetic scenes for the ablation: simple objects and one sign on a 3x3 grid, from a seed.

Every fact a question can ask about (which objects, where, what is over what, what the sign
says) is known exactly, and the segment-id map is drawn with the same geometry as the picture,
so the oracle annotator (`oracle.py`) can write pixel-exact ground truth.

Objects are COCO panoptic classes drawn as simple shapes, so the oracle's rows use real
COCO label ids and the verbalizer prints real class names.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from schemas.fonts import find_font

# (verbalized name, COCO panoptic contiguous id, plural used in questions)
OBJECT_KINDS = (
    ("sports ball", 32, "sports balls"),
    ("kite", 33, "kites"),
    ("cup", 41, "cups"),
    ("book", 73, "books"),
    ("clock", 74, "clocks"),
)
SIGN_LABEL, SIGN_LABEL_ID = "banner", 80
BACKGROUND_LABEL, BACKGROUND_LABEL_ID = "wall-other-merged", 131
SIGN_WORDS = ("OPEN", "EXIT", "STOP", "SALE", "CAFE", "HOTEL", "PARK", "BANK",
              "TAXI", "BUS", "FOOD", "BOOKS", "PIZZA", "MUSIC", "SHOP", "GATE")
COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
          "yellow": (235, 200, 30), "purple": (140, 60, 180), "orange": (240, 130, 30)}
ROW_NAMES = ("top", "middle", "bottom")
COL_NAMES = ("left", "center", "right")
GRID = 3


@dataclass(frozen=True)
class SceneConfig:
    size: int = 490                 # square canvas, MoAI's working resolution
    min_objects: int = 3
    max_objects: int = 6            # plus one sign; at most GRID*GRID - 1 objects

    def __post_init__(self):
        if self.size < 48:
            raise ValueError(f"size must be >= 48 pixels to draw anything, got {self.size}")
        if not 1 <= self.min_objects <= self.max_objects <= GRID * GRID - 1:
            raise ValueError(f"need 1 <= min_objects <= max_objects <= {GRID * GRID - 1}, "
                             f"got {self.min_objects}, {self.max_objects}")


@dataclass(frozen=True)
class SceneObject:
    kind: str                       # one of OBJECT_KINDS' names, or SIGN_LABEL
    color: str
    row: int                        # grid cell, 0 = top
    col: int                        # 0 = left
    box: tuple[int, int, int, int]  # pixel box the shape is drawn in (x0, y0, x1, y1), exclusive end

    @property
    def position(self) -> str:
        """'top left', 'top', ..., 'center', ..., 'bottom right'."""
        row, col = ROW_NAMES[self.row], COL_NAMES[self.col]
        if row == "middle":
            return col
        return row if col == "center" else f"{row} {col}"


@dataclass(frozen=True)
class Scene:
    scene_id: str
    size: int
    background: tuple[int, int, int]
    objects: tuple[SceneObject, ...]   # row-major cell order
    sign: SceneObject
    sign_word: str

    def count(self, kind: str) -> int:
        return sum(o.kind == kind for o in self.objects)

    def over_pairs(self) -> list[tuple[int, int]]:
        """(i, j): object i is in the cell directly above object j (PSG predicate 'over')."""
        at = {(o.row, o.col): i for i, o in enumerate(self.objects)}
        return [(i, at[(o.row + 1, o.col)]) for i, o in enumerate(self.objects) if (o.row + 1, o.col) in at]

    def beside_pairs(self) -> list[tuple[int, int]]:
        """(i, j): j is in the cell right of i, for objects i that are over nothing."""
        at = {(o.row, o.col): i for i, o in enumerate(self.objects)}
        over = {i for i, _ in self.over_pairs()}
        return [(i, at[(o.row, o.col + 1)]) for i, o in enumerate(self.objects)
                if i not in over and (o.row, o.col + 1) in at]


def scene_id(index: int) -> str:
    return f"scene_{index:06d}"


def make_scene(seed: int, index: int, cfg: SceneConfig = SceneConfig()) -> Scene:
    """Scene number `index` of the family `seed`; the same arguments always give the same scene."""
    rng = np.random.default_rng([seed, index])
    cells = [(r, c) for r in range(GRID) for c in range(GRID)]
    order = rng.permutation(len(cells))
    n_objects = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    sign_cell = cells[order[0]]
    object_cells = sorted(cells[i] for i in order[1:1 + n_objects])
    kinds = [k[0] for k in OBJECT_KINDS]
    color_names = list(COLORS)
    objects = tuple(
        SceneObject(kind=kinds[int(rng.integers(len(kinds)))], color=color_names[int(rng.integers(len(color_names)))],
                    row=r, col=c, box=_cell_box(rng, cfg.size, r, c, fill=(0.55, 0.8)))
        for r, c in object_cells)
    sign = SceneObject(kind=SIGN_LABEL, color="white", row=sign_cell[0], col=sign_cell[1],
                       box=_cell_box(rng, cfg.size, *sign_cell, fill=(0.85, 0.95), aspect=0.55))
    background = tuple(int(v) for v in rng.integers(150, 215, 3))
    word = SIGN_WORDS[int(rng.integers(len(SIGN_WORDS)))]
    return Scene(scene_id(index), cfg.size, background, objects, sign, word)


def _cell_box(rng: np.random.Generator, size: int, row: int, col: int, fill: tuple[float, float],
              aspect: float = 1.0) -> tuple[int, int, int, int]:
    """A box inside grid cell (row, col), `fill` of the cell wide, jittered, `aspect` = h / w."""
    cell = size / GRID
    w = int(cell * rng.uniform(*fill))
    h = max(4, int(w * aspect))
    x0 = int(col * cell + rng.integers(0, max(1, int(cell) - w)))
    y0 = int(row * cell + rng.integers(0, max(1, int(cell) - h)))
    return (x0, y0, x0 + w, y0 + h)


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(find_font(bold=True)), size)



def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, box: tuple[int, int, int, int], fill) -> None:
    """One object's silhouette; `fill` is a colour (picture) or a segment id (id map)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if kind == "sports ball":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif kind == "clock":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif kind == "kite":
        draw.polygon([(x0 + w / 2, y0), (x1 - 1, y0 + h * 0.4), (x0 + w / 2, y1 - 1), (x0, y0 + h * 0.4)], fill=fill)
    elif kind == "cup":
        draw.polygon([(x0, y0 + h * 0.15), (x0 + w * 0.75, y0 + h * 0.15), (x0 + w * 0.65, y1 - 1),
                      (x0 + w * 0.1, y1 - 1)], fill=fill)
        draw.rectangle((x0 + w * 0.72, y0 + h * 0.3, x1 - 1, y0 + h * 0.6), fill=fill)
    elif kind == "book":
        draw.rectangle((x0 + w * 0.1, y0, x1 - 1 - w * 0.1, y1 - 1), fill=fill)
    elif kind == SIGN_LABEL:
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
    else:
        raise ValueError(f"unknown object kind {kind!r}")


def _draw_details(draw: ImageDraw.ImageDraw, obj: SceneObject) -> None:
    """Inner marks that make kinds with the same silhouette look different (inside the mask)."""
    x0, y0, x1, y1 = obj.box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if obj.kind == "clock":
        draw.ellipse((x0 + r * 0.2, y0 + r * 0.2, x1 - r * 0.2, y1 - r * 0.2), fill=(245, 245, 245))
        draw.line((cx, cy, cx, cy - r * 0.6), fill=(0, 0, 0), width=max(1, int(r * 0.08)))
        draw.line((cx, cy, cx + r * 0.45, cy), fill=(0, 0, 0), width=max(1, int(r * 0.08)))
    elif obj.kind == "sports ball":
        draw.line((x0 + r * 0.3, cy, x1 - r * 0.3, cy), fill=(255, 255, 255), width=max(1, int(r * 0.1)))
    elif obj.kind == "book":
        draw.line((x0 + (x1 - x0) * 0.2, y0, x0 + (x1 - x0) * 0.2, y1 - 1), fill=(30, 30, 30),
                  width=max(1, int(r * 0.08)))


def render(scene: Scene) -> tuple[Image.Image, np.ndarray]:
    """The RGB picture and its (H, W) uint8 segment-id map (ids as `oracle.segments` numbers them)."""
    image = Image.new("RGB", (scene.size, scene.size), scene.background)
    ids = Image.new("L", (scene.size, scene.size), len(scene.objects) + 2)  # background segment
    draw, draw_ids = ImageDraw.Draw(image), ImageDraw.Draw(ids)
    for segment_id, obj in enumerate(scene.objects, start=1):
        _draw_shape(draw, obj.kind, obj.box, COLORS[obj.color])
        _draw_details(draw, obj)
        _draw_shape(draw_ids, obj.kind, obj.box, segment_id)
    sign = scene.sign
    _draw_shape(draw, SIGN_LABEL, sign.box, (250, 250, 245))
    draw.rectangle(sign.box, outline=(20, 20, 20), width=max(1, scene.size // 160))
    _draw_shape(draw_ids, SIGN_LABEL, sign.box, len(scene.objects) + 1)
    _draw_sign_text(draw, sign.box, scene.sign_word)
    return image, np.array(ids)


def _draw_sign_text(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], word: str) -> None:
    x0, y0, x1, y1 = box
    size = max(6, int((y1 - y0) * 0.6))
    font = _font(size)
    while draw.textlength(word, font=font) > (x1 - x0) * 0.85 and size > 6:
        size -= 2
        font = _font(size)
    tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), word, font=font)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    draw.text((cx - (tx1 - tx0) / 2 - tx0, cy - (ty1 - ty0) / 2 - ty0), word, font=font, fill=(15, 15, 15))

"""Draw one annotation row over its photo: PS map in MoAI's colours, boxes, scene-graph edges, OCR.

Boxes and polygons are normalized to the original image, so the photo is shown whole (scaled,
aspect kept) and every coordinate maps as x * width, y * height. The PS map lives at the
working resolution (MoAI squashes to 490x490); it is stretched back to the photo's aspect with
nearest-neighbour sampling, which is exactly the inverse of the squash.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from schemas import STATUS_OK, VerbalizeConfig, colorize, decode_ps_map
from schemas.fonts import find_font
from schemas.image import open_rgb, read_bytes
from schemas.verbalize import numbered_object_names, select_relations

GREY = (128, 128, 128)
OCR_KEPT = (255, 230, 0)
OCR_DROPPED = (170, 170, 170)
SGG_EDGE = (255, 60, 200)
BANNER = (0, 0, 0)
# Saturated colours that stay readable over photos; a label always gets the same one.
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128), (255, 225, 25))


@dataclass(frozen=True)
class RenderConfig:
    max_side: int = 640          # the photo is scaled so its longer side is this many pixels
    ps_alpha: float = 0.45       # weight of the PS colours where a segment is
    line_width: int = 3
    font_size: int = 14
    verbalize: VerbalizeConfig = field(default_factory=VerbalizeConfig)  # which detections/relations are drawn

    def __post_init__(self):
        if self.max_side < 32:
            raise ValueError(f"max_side must be >= 32 pixels, got {self.max_side!r}")
        if not 0.0 <= self.ps_alpha <= 1.0:
            raise ValueError(f"ps_alpha must lie in [0, 1], got {self.ps_alpha!r}")
        if self.line_width < 1 or self.font_size < 6:
            raise ValueError(f"line_width >= 1 and font_size >= 6 needed, got {self.line_width!r}, "
                             f"{self.font_size!r}")


def label_colour(label: str) -> tuple[int, int, int]:
    return PALETTE[int(hashlib.md5(label.encode()).hexdigest(), 16) % len(PALETTE)]


def load_photo(source: str) -> tuple[Image.Image | None, str | None]:
    """(the upright RGB photo the pipeline annotated, None), or (None, why not): a remote source is
    not fetched, and a file that is gone, truncated or over the pixel limit gives a note, never an
    exception, so one bad picture cannot stop a gallery."""
    path = source[len("file://"):] if source.startswith("file://") else source
    if "://" in path:
        return None, f"source {source} is not a local file"
    try:
        return open_rgb(read_bytes(path)), None
    except FileNotFoundError:
        return None, f"source unreadable (no such file): {source}"
    except Exception as exc:  # noqa: BLE001 - DecodeError, OSError, anything Pillow raises
        return None, f"source unreadable ({type(exc).__name__}: {exc}): {source}"


class Renderer:
    """Callable: (row, photo or None, note) -> RGB picture. Loads its font once."""

    def __init__(self, config: RenderConfig = RenderConfig()):
        self.config = config
        self.font = ImageFont.truetype(str(find_font()), config.font_size)

    def canvas(self, row: dict, photo: Image.Image | None) -> Image.Image:
        """The photo scaled to max_side, or a grey canvas at the PS map's size when there is none."""
        if photo is not None:
            w, h = photo.size
            scale = self.config.max_side / max(w, h)
            return photo.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        if row.get("ps_map"):
            h, w = decode_ps_map(row["ps_map"]).shape
        elif row.get("width") and row.get("height"):
            scale = self.config.max_side / max(row["width"], row["height"])
            w, h = round(row["width"] * scale), round(row["height"] * scale)
        else:
            w = h = self.config.max_side
        return Image.new("RGB", (w, h), GREY)

    def __call__(self, row: dict, photo: Image.Image | None, note: str | None = None) -> Image.Image:
        image = self.canvas(row, photo)
        if row.get("ps_map"):
            image = self.blend_ps_map(image, decode_ps_map(row["ps_map"]))
        draw = ImageDraw.Draw(image)
        size = image.size
        self.draw_scene_graph(draw, row.get("scene_graph"), size)
        self.draw_detections(draw, row.get("detections") or [], size)
        self.draw_ocr(draw, row.get("ocr") or [], size)
        banner = []
        if row.get("status") != STATUS_OK and row.get("error"):
            banner.append(f"error [{row['error']['stage']}]: {row['error']['message']}")
        if note:
            banner.append(note)
        if banner:
            self.draw_banner(draw, banner, size)
        return image

    def blend_ps_map(self, image: Image.Image, segment_ids: np.ndarray) -> Image.Image:
        """MoAI's colours (VOC colormap by segment id) over the photo where a segment is."""
        ids = np.array(Image.fromarray(segment_ids).resize(image.size, Image.NEAREST))  # (H, W)
        photo = np.asarray(image, dtype=np.float32)                                    # (H, W, 3)
        colours = colorize(ids).astype(np.float32)                                     # (H, W, 3)
        alpha = np.where(ids > 0, self.config.ps_alpha, 0.0)[..., None]                # (H, W, 1)
        return Image.fromarray((photo * (1 - alpha) + colours * alpha).round().astype(np.uint8))

    def tag(self, draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, colour: tuple,
            above: bool = True) -> None:
        """A filled label; placed above `xy` when there is room, else just inside."""
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=self.font)
        w, h = x1 - x0 + 4, y1 - y0 + 4
        x, y = xy
        y = y - h if above and y - h >= 0 else y
        fill = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
        draw.rectangle((x, y, x + w, y + h), fill=colour)
        draw.text((x + 2 - x0, y + 2 - y0), text, font=self.font, fill=fill)

    @staticmethod
    def pixels(box, size: tuple[int, int]) -> tuple[float, float, float, float]:
        w, h = size
        return box[0] * w, box[1] * h, box[2] * w, box[3] * h

    def draw_detections(self, draw: ImageDraw.ImageDraw, detections: list[dict], size) -> None:
        """Detections MoAI verbalizes (score >= owod_min_score), with label and score."""
        keep = [d for d in detections if d["score"] >= self.config.verbalize.owod_min_score]
        for det in sorted(keep, key=lambda d: d["score"]):  # best drawn last, on top
            colour = label_colour(det["label"])
            x0, y0, x1, y1 = self.pixels(det["box"], size)
            draw.rectangle((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)),
                           outline=colour, width=self.config.line_width)
            self.tag(draw, (min(x0, x1), min(y0, y1)), f"{det['label']} {det['score']:.2f}", colour)

    def draw_scene_graph(self, draw: ImageDraw.ImageDraw, graph: dict | None, size) -> None:
        """Verbalized relations as edges between the centres of subject and object boxes."""
        keep = select_relations(graph, self.config.verbalize)
        if not keep:
            return
        objects, relations = graph["objects"], graph["relations"]
        names = numbered_object_names([o["label"] for o in objects])
        involved = sorted({i for r in keep for i in (relations[r]["subject"], relations[r]["object"])})
        centres = {}
        for i in involved:
            x0, y0, x1, y1 = self.pixels(objects[i]["box"], size)
            draw.rectangle((x0, y0, x1, y1), outline=SGG_EDGE, width=1)
            centres[i] = ((x0 + x1) / 2, (y0 + y1) / 2)
        for r in keep:
            rel = relations[r]
            (sx, sy), (ox, oy) = centres[rel["subject"]], centres[rel["object"]]
            draw.line((sx, sy, ox, oy), fill=SGG_EDGE, width=self.config.line_width)
            draw.ellipse((ox - 4, oy - 4, ox + 4, oy + 4), fill=SGG_EDGE)  # arrow head: object end
            label = f"{names[rel['subject']]} {rel['predicate']} {names[rel['object']]}"
            self.tag(draw, ((sx + ox) / 2, (sy + oy) / 2), label, SGG_EDGE, above=False)

    def draw_ocr(self, draw: ImageDraw.ImageDraw, lines: list[dict], size) -> None:
        """Every stored line; kept ones (score >= ocr_min_score) bright, the rest grey."""
        w, h = size
        for line in lines:
            points = [(x * w, y * h) for x, y in line["polygon"]]
            if len(points) < 2:
                continue
            kept = line["score"] >= self.config.verbalize.ocr_min_score
            colour = OCR_KEPT if kept else OCR_DROPPED
            draw.polygon(points, outline=colour, width=self.config.line_width)
            left, top = min(p[0] for p in points), max(p[1] for p in points)
            self.tag(draw, (left, top + self.config.line_width), f"{line['text']} {line['score']:.2f}",
                     colour, above=False)

    def draw_banner(self, draw: ImageDraw.ImageDraw, messages: list[str], size) -> None:
        y = 0
        for message in messages:
            message = message if len(message) <= 120 else message[:117] + "..."
            x0, y0, x1, y1 = draw.textbbox((0, 0), message, font=self.font)
            draw.rectangle((0, y, size[0], y + y1 - y0 + 6), fill=BANNER)
            draw.text((3 - x0, y + 3 - y0), message, font=self.font, fill=(255, 255, 255))
            y += y1 - y0 + 6

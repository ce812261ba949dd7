"""A small synthetic training corpus (tests, benchmarks): rendered photos, their annotation Parquet
(schemas.rows_to_table + encode_ps_map) and a LLaVA-style conversation JSON with the edge cases
the join must report (an error row, an image with no annotation, a text-only conversation)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

from schemas import empty_row, encode_ps_map, error_row, rows_to_table

TINY_RECIPE = Path(__file__).resolve().parent / "recipes" / "tiny.yaml"
SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220)}


def render(shape: str, colour: str, size: int = 160) -> tuple[Image.Image, np.ndarray]:
    """A photo of one coloured shape on grey, and its (490, 490) segment map (1 = shape, 2 = ground)."""
    image = Image.new("RGB", (size, size), (128, 128, 128))
    mask = Image.new("L", (size, size), 2)
    box = (size // 4, size // 4, 3 * size // 4, 3 * size // 4)
    for canvas, fill in ((ImageDraw.Draw(image), COLOURS[colour]), (ImageDraw.Draw(mask), 1)):
        if shape == "circle":
            canvas.ellipse(box, fill=fill)
        elif shape == "square":
            canvas.rectangle(box, fill=fill)
        else:
            canvas.polygon([(box[0], box[3]), (box[2], box[3]), (size // 2, box[1])], fill=fill)
    return image, np.asarray(mask.resize((490, 490), Image.Resampling.NEAREST))


def write_corpus(root: Path, n_images: int = 6) -> dict[str, Path]:
    """Images + annotations/part-0.parquet + conversations.json under `root`; returns the paths."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    rows, conversations = [], []
    names = [(SHAPES[i % 3], list(COLOURS)[(i // 3) % 3]) for i in range(n_images)]
    for i, (shape, colour) in enumerate(names):
        image, segments = render(shape, colour)
        path = root / "images" / f"img{i}.png"
        image.save(path)
        row = empty_row(f"img{i}.png", str(path), 160, 160)
        shape_area = int((segments == 1).sum())
        row["panoptic"] = [
            {"segment_id": 1, "label_id": 0, "label": shape, "is_thing": True, "score": 0.9,
             "box": [0.25, 0.25, 0.75, 0.75], "area": shape_area},
            {"segment_id": 2, "label_id": 1, "label": "wall-other-merged", "is_thing": False, "score": 0.8,
             "box": [0.0, 0.0, 1.0, 1.0], "area": 490 * 490 - shape_area}]
        row.update(ps_map=encode_ps_map(segments), text_ps=f"The image includes bounding box coordinates "
                   f"and their objects: [0.25, 0.25, 0.75, 0.75] {shape}.", text_owod="", text_sgg="", text_ocr="")
        row["text_aux"] = f"{row['text_ps']}   "
        rows.append(row)
        conversations.append({"id": f"c{i}", "image": f"img{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat shape is shown?"},
            {"from": "gpt", "value": f"A {colour} {shape}."},
            {"from": "human", "value": "And its colour?"},
            {"from": "gpt", "value": colour}]})
    rows.append(error_row("broken.png", str(root / "images" / "broken.png"), "decode", "cannot identify image"))
    conversations += [
        {"id": "err", "image": "broken.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "Nothing."}]},
        {"id": "missing", "image": "not_annotated.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "Nothing."}]},
        {"id": "textonly", "conversations": [
            {"from": "human", "value": "Hello?"}, {"from": "gpt", "value": "Hi."}]},
    ]
    import pyarrow.parquet as pq
    pq.write_table(rows_to_table(rows, {"test": True}), root / "annotations" / "part-0.parquet")
    (root / "conversations.json").write_text(json.dumps(conversations))
    return {"annotations": root / "annotations", "conversations": root / "conversations.json"}


def tiny_recipe(root: Path, backbones: Path, **train) -> dict:
    """The tiny recipe pointed at `root`'s corpus, with train overrides (e.g. max_steps=4)."""
    recipe = yaml.safe_load(TINY_RECIPE.read_text())
    recipe["model"] = {"tiny": str(backbones), "image_size": 112}  # 8 x 8 image tokens: fast on CPU
    recipe["data"].update(annotations=str(root / "annotations"), conversations=str(root / "conversations.json"),
                          cache=None)
    recipe["train"].update(output_dir=str(root / "run"), **train)
    return recipe

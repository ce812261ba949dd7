"""The bundled demo corpus, made reproducibly from photos that ship inside installed packages
(scikit-image, ultralytics) plus a few pictures rendered with text so OCR has something to read.

`python -m pipeline.demo_corpus OUT_DIR` writes it; nothing is downloaded, no binary is
copied into the repository.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from schemas.fonts import find_font

SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
ULTRALYTICS_PHOTOS = ("bus.jpg", "zidane.jpg")
SIGNS = (
    ("sign_hello.png", "HELLO WORLD 2026", (255, 255, 255), (20, 20, 20)),
    ("sign_open.png", "OPEN 24 HOURS", (250, 220, 40), (10, 10, 120)),
    ("sign_exit.png", "EXIT", (0, 120, 40), (255, 255, 255)),
)


def render_sign(text: str, background: tuple, ink: tuple, size=(640, 360), seed: int = 0) -> Image.Image:
    """A sign: text in DejaVu Sans Bold on a plain board, with a little deterministic clutter."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(c) for c in rng.integers(90, 160, 3)))
    draw = ImageDraw.Draw(image)
    board = (40, 80, size[0] - 40, size[1] - 80)
    draw.rectangle(board, fill=background, outline=(0, 0, 0), width=4)
    font = ImageFont.truetype(str(find_font(bold=True)), 56)
    while draw.textlength(text, font=font) > board[2] - board[0] - 40 and font.size > 12:
        font = ImageFont.truetype(str(find_font(bold=True)), font.size - 4)
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    cx, cy = (board[0] + board[2]) / 2, (board[1] + board[3]) / 2
    draw.text((cx - (x1 - x0) / 2 - x0, cy - (y1 - y0) / 2 - y0), text, font=font, fill=ink)
    return image


def _skimage_photo(name: str) -> Image.Image:
    from skimage import data
    array = getattr(data, name)()
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return Image.fromarray(array[..., :3].astype(np.uint8))


def _ultralytics_photo(name: str) -> Path:
    import ultralytics
    return Path(ultralytics.__file__).parent / "assets" / name


def write_demo_corpus(out: str | Path) -> list[Path]:
    """Write the corpus into `out` (idempotent) and return the image paths, sorted."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SKIMAGE_PHOTOS:
        path = out / f"{name}.jpg"
        if not path.exists():
            _skimage_photo(name).save(path, quality=92)
        written.append(path)
    try:
        for name in ULTRALYTICS_PHOTOS:
            path = out / name
            if not path.exists():
                path.write_bytes(_ultralytics_photo(name).read_bytes())
            written.append(path)
    except ImportError:
        pass  # ultralytics is an optional extra; the demo environment installs it
    for i, (name, text, background, ink) in enumerate(SIGNS):
        path = out / name
        if not path.exists():
            render_sign(text, background, ink, seed=i).save(path)
        written.append(path)
    return sorted(written)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", nargs="?", default="demo/corpus")
    args = parser.parse_args(argv)
    paths = write_demo_corpus(args.out)
    print(f"demo corpus: {len(paths)} images in {args.out}")


if __name__ == "__main__":
    main()

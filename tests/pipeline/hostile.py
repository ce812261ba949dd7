"""Hostile input files, written with Pillow, and the status each must end with."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

PIXEL_LIMIT = 600 * 600  # the tests lower max_pixels so "too large" stays a small file


def _jpeg(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **kwargs)
    return buffer.getvalue()


def write_hostile(folder: Path) -> dict[str, tuple[str, str | None]]:
    """Writes the files; returns image_id -> (status, error stage)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(_jpeg(photo.resize((256, 256)))[:1500])
    (folder / "html.jpg").write_bytes(b"<!doctype html><html><body>404 Not Found</body></html>")
    Image.fromarray((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)).save(folder / "grey16.png")
    (folder / "cmyk.jpg").write_bytes(_jpeg(photo.convert("CMYK")))
    palette = Image.new("P", (40, 30))
    palette.putpalette([i % 256 for i in range(768)])
    palette.info["transparency"] = 0
    palette.save(folder / "palette_alpha.png", transparency=0)
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "one_pixel.png")
    Image.new("RGB", (700, 700), (0, 80, 0)).save(folder / "too_large.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display: stored 96x64 -> shown 64x96
    photo.save(folder / "exif_rotated.jpg", exif=exif.tobytes())
    frames = [Image.new("RGB", (32, 24), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    photo.save(folder / "normal.jpg")
    return {
        "empty.jpg": ("error", "decode"), "truncated.jpg": ("error", "decode"),
        "html.jpg": ("error", "decode"), "grey16.png": ("ok", None), "cmyk.jpg": ("ok", None),
        "palette_alpha.png": ("ok", None), "one_pixel.png": ("ok", None),
        "too_large.png": ("error", "decode"), "exif_rotated.jpg": ("ok", None),
        "animated.gif": ("ok", None), "normal.jpg": ("ok", None),
    }

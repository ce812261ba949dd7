"""Read and decode images on CPU tasks: bytes -> RGB uint8 squashed to the working size.

EXIF orientation is applied, the first frame of an animation is used, 16-bit images are scaled
(not clipped) to 8 bits, alpha is composited onto white, and anything unreadable becomes an error
row (stage "read" or "decode") instead of failing the batch. `width`/`height` are the size after
EXIF orientation, before squashing.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import pyarrow as pa
from PIL import Image, ImageOps

from schemas.schema import ANNOTATION_SCHEMA, STATUS_ERROR, STATUS_OK

from .inputs import filesystem_for

# The columns decode hands to the annotator stages: identity, status, and the pixels.
IMAGE_COLUMN = "image"  # raw RGB bytes, working_size x working_size x 3; null on error rows
DECODED_SCHEMA = pa.schema([ANNOTATION_SCHEMA.field(name) for name in
                            ("image_id", "source", "width", "height", "status", "error")]
                           + [pa.field(IMAGE_COLUMN, pa.binary())])


class DecodeError(ValueError):
    """This image cannot be used; the message says why."""


def read_bytes(source: str) -> bytes:
    fs, path = filesystem_for(source)
    with fs.open_input_file(path) as stream:
        return stream.read()


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.int64)
        top = 65535 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 255
        grey = np.clip(array * 255 // top, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def decode_image(data: bytes, working_size: int, max_pixels: int) -> tuple[np.ndarray, int, int]:
    """(pixels (S, S, 3) uint8, width, height) or DecodeError."""
    if not data:
        raise DecodeError("empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except Exception as exc:
        raise DecodeError(f"not an image Pillow can identify ({type(exc).__name__}: {exc})") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise DecodeError(f"{width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's bomb warning: we enforce max_pixels ourselves
            image.seek(0)                    # first frame of an animated GIF/PNG/WebP
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = _to_rgb(image)
    except Exception as exc:
        raise DecodeError(f"{type(exc).__name__}: {exc}") from exc
    width, height = rgb.size
    squashed = rgb.resize((working_size, working_size), Image.Resampling.BICUBIC)
    return np.asarray(squashed, dtype=np.uint8), width, height  # (S, S, 3)


def decode_batch(batch: pa.Table, working_size: int, max_pixels: int) -> pa.Table:
    """map_batches function: (image_id, source) rows -> DECODED_SCHEMA rows, one per input."""
    rows = []
    for image_id, source in zip(batch.column("image_id").to_pylist(), batch.column("source").to_pylist()):
        row = {"image_id": image_id, "source": source, "width": None, "height": None,
               "status": STATUS_OK, "error": None, IMAGE_COLUMN: None}
        try:
            data = read_bytes(source)
        except Exception as exc:
            row.update(status=STATUS_ERROR, error={"stage": "read", "message": f"{type(exc).__name__}: {exc}"})
            rows.append(row)
            continue
        try:
            pixels, width, height = decode_image(data, working_size, max_pixels)
            row.update(width=width, height=height, **{IMAGE_COLUMN: pixels.tobytes()})
        except DecodeError as exc:
            row.update(status=STATUS_ERROR, error={"stage": "decode", "message": str(exc)[:2000]})
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=DECODED_SCHEMA)


def images_of(batch: pa.Table, working_size: int) -> np.ndarray:
    """The pixels of a decoded batch's rows (all must be ok): (B, S, S, 3) uint8."""
    buffers = batch.column(IMAGE_COLUMN).to_pylist()
    if not buffers:
        return np.zeros((0, working_size, working_size, 3), np.uint8)
    return np.stack([np.frombuffer(b, np.uint8).reshape(working_size, working_size, 3) for b in buffers])

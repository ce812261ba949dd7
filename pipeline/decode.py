"""Read and decode images on CPU tasks: bytes -> RGB uint8 squashed to the working size.

The decoding itself is the contract's (`schemas/image.py`: EXIF orientation, first frame, 16-bit
scaled to 8 bits, alpha onto white, pixel limit), so the trainer reads the very pixels annotated
here. Anything unreadable becomes an error row (stage "read" or "decode") instead of failing the
batch. `width`/`height` are the size after EXIF orientation, before squashing.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from schemas.image import DecodeError, decode_image, read_bytes
from schemas.schema import ANNOTATION_SCHEMA, STATUS_ERROR, STATUS_OK

__all__ = ["DECODED_SCHEMA", "DecodeError", "decode_batch", "decode_image", "images_of", "read_bytes"]

# The columns decode hands to the annotator stages: identity, status, and the pixels.
IMAGE_COLUMN = "image"  # raw RGB bytes, working_size x working_size x 3; null on error rows
DECODED_SCHEMA = pa.schema([ANNOTATION_SCHEMA.field(name) for name in
                            ("image_id", "source", "width", "height", "status", "error")]
                           + [pa.field(IMAGE_COLUMN, pa.binary())])


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

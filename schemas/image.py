"""The working image: the one decoder the pipeline annotates with and the trainer learns from.

An annotation's boxes and `ps_map` describe the pixels this module makes of `source`, so every
reader of a source (pipeline decode, trainer online dataset, feature cache, generate, `show`) goes
through it: bytes from a local path or any pyarrow filesystem URI; the pixel count read from the
header and refused above `max_pixels` (before decoding); the first frame of an animation; EXIF
orientation applied; 16-bit images scaled (not clipped) to 8 bits; alpha composited onto white;
RGB; squashed (no padding) to `size` x `size` with bicubic resampling, as MoAI does.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import pyarrow.fs as pafs
from PIL import Image, ImageOps

DEFAULT_MAX_PIXELS = 178_956_970  # 2 x Pillow's own warning limit, ~179 MP (e.g. 16384 x 10923)


class DecodeError(ValueError):
    """This image cannot be used; the message says why."""


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or any URI pyarrow understands."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), str(uri)


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


def open_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The upright RGB image at its own size (EXIF applied), or DecodeError."""
    if not data:
        raise DecodeError("empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's bomb warning: max_pixels is enforced here
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:  # above Pillow's own hard limit
            raise DecodeError(f"over the pixel limit: {exc}") from exc
        except Exception as exc:
            raise DecodeError(f"not an image Pillow can identify ({type(exc).__name__}: {exc})") from exc
        width, height = image.size
        if width * height > max_pixels:
            raise DecodeError(f"{width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels}")
        try:
            image.seek(0)  # first frame of an animated GIF/PNG/WebP
            image.load()
            return _to_rgb(ImageOps.exif_transpose(image))
        except Exception as exc:
            raise DecodeError(f"{type(exc).__name__}: {exc}") from exc


def decode_image(data: bytes, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, int, int]:
    """(pixels (size, size, 3) uint8, width, height after EXIF orientation) or DecodeError."""
    rgb = open_rgb(data, max_pixels)
    squashed = rgb.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(squashed, dtype=np.uint8), rgb.size[0], rgb.size[1]  # (S, S, 3)


def load_working_image(source: str, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The working image of `source`: (size, size, 3) uint8 RGB. OSError / DecodeError when unusable."""
    return decode_image(read_bytes(source), size, max_pixels)[0]

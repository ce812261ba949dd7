"""One image decoder for the pipeline, the trainer and `show` (schemas/image.py)."""
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from pipeline.decode import IMAGE_COLUMN, decode_batch
from pipeline.render import load_photo
from schemas.image import DecodeError, decode_image, open_rgb
from trainer.data import load_image

from ..pipeline.hostile import PIXEL_LIMIT, write_hostile


def pipeline_pixels(path, size):
    batch = pa.table({"image_id": [path.name], "source": [str(path)]})
    out = decode_batch(batch, size, PIXEL_LIMIT)
    assert out.column("status")[0].as_py() == "ok", out.column("error")[0].as_py()
    return np.frombuffer(out.column(IMAGE_COLUMN)[0].as_py(), np.uint8).reshape(size, size, 3)


@pytest.mark.parametrize("name", ["exif_rotated.jpg", "grey16.png", "palette_alpha.png", "animated.gif", "cmyk.jpg"])
def test_the_trainer_sees_the_pixels_the_pipeline_annotated(tmp_path, name):
    write_hostile(tmp_path)
    path = tmp_path / name
    np.testing.assert_array_equal(load_image(str(path), 96), pipeline_pixels(path, 96))


def test_exif_orientation_is_applied_for_everyone(tmp_path):
    write_hostile(tmp_path)
    path = tmp_path / "exif_rotated.jpg"
    with Image.open(path) as raw:
        stored = np.asarray(raw.convert("RGB"))  # (64, 96, 3) as stored, shown rotated
    assert stored.shape == (64, 96, 3)
    upright = np.asarray(open_rgb(path.read_bytes()))
    assert upright.shape == (96, 64, 3)
    np.testing.assert_array_equal(upright, np.rot90(stored, k=-1))  # orientation 6: 90 degrees clockwise
    photo, note = load_photo(str(path))  # show draws the upright photo too
    assert note is None and photo.size == (64, 96)
    # the trainer's squashed image is the upright one, not the stored one
    squashed_stored = np.asarray(Image.fromarray(stored).resize((96, 96), Image.Resampling.BICUBIC))
    assert np.abs(load_image(str(path), 96).astype(int) - squashed_stored).mean() > 10


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    write_hostile(tmp_path)
    pixels = load_image(str(tmp_path / "grey16.png"), 64)
    assert pixels.max() > 200 and len(np.unique(pixels)) > 100  # clipping would leave most pixels at 255


def test_an_image_over_the_pixel_limit_says_so(tmp_path):
    Image.new("L", (30000, 30000)).save(tmp_path / "bomb.png", optimize=False)  # ~900 MP, tiny file
    data = (tmp_path / "bomb.png").read_bytes()
    with pytest.raises(DecodeError, match="pixel") as err:
        decode_image(data, 64)
    assert "not an image Pillow can identify" not in str(err.value)
    photo, note = load_photo(str(tmp_path / "bomb.png"))
    assert photo is None and "pixel" in note

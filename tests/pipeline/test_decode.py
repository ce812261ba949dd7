"""Decoding without Ray: each hostile file gives the right row, pixels come out as the contract says."""
import numpy as np
import pyarrow as pa

from pipeline.decode import DecodeError, decode_batch, decode_image, images_of

from .hostile import PIXEL_LIMIT, write_hostile


def test_hostile_files_one_row_each(tmp_path):
    expected = write_hostile(tmp_path)
    ids = sorted(expected) + ["missing.jpg"]
    batch = pa.table({"image_id": ids, "source": [str(tmp_path / i) for i in ids]})
    out = decode_batch(batch, working_size=32, max_pixels=PIXEL_LIMIT)
    rows = {r["image_id"]: r for r in out.to_pylist()}
    assert out.num_rows == len(ids)
    assert rows["missing.jpg"]["status"] == "error" and rows["missing.jpg"]["error"]["stage"] == "read"
    for image_id, (status, stage) in expected.items():
        row = rows[image_id]
        assert row["status"] == status, (image_id, row["error"])
        assert (row["error"] or {}).get("stage") == stage, image_id
        assert (row["image"] is None) == (status == "error")
    assert "0 bytes" in rows["empty.jpg"]["error"]["message"]
    assert "max_pixels" in rows["too_large.png"]["error"]["message"]
    assert (rows["exif_rotated.jpg"]["width"], rows["exif_rotated.jpg"]["height"]) == (64, 96)
    assert (rows["one_pixel.png"]["width"], rows["one_pixel.png"]["height"]) == (1, 1)
    ok = out.filter(pa.compute.equal(out.column("status"), "ok"))
    assert images_of(ok, 32).shape == (ok.num_rows, 32, 32, 3)


def test_sixteen_bit_scaled_not_clipped(tmp_path):
    write_hostile(tmp_path)
    pixels, _, _ = decode_image((tmp_path / "grey16.png").read_bytes(), 64, PIXEL_LIMIT)
    # the ramp 0..65520 must spread over 0..255; clipping would saturate most pixels at 255
    assert pixels.dtype == np.uint8 and pixels.max() >= 250 and (pixels == 255).mean() < 0.05


def test_first_frame_and_alpha(tmp_path):
    write_hostile(tmp_path)
    frame, _, _ = decode_image((tmp_path / "animated.gif").read_bytes(), 8, PIXEL_LIMIT)
    assert tuple(frame[4, 4]) == (255, 0, 0)
    rgb, _, _ = decode_image((tmp_path / "palette_alpha.png").read_bytes(), 8, PIXEL_LIMIT)
    assert tuple(rgb[0, 0]) == (255, 255, 255)  # palette index 0 is transparent -> white


def test_decode_error_messages():
    for data, words in ((b"", "0 bytes"), (b"GIF89a garbage", "identify")):
        try:
            decode_image(data, 8, 100)
        except DecodeError as exc:
            assert words in str(exc)
        else:
            raise AssertionError("decode_image accepted garbage")

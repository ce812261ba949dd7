"""PaddleOCR on the real PP-OCR weights from the rapidocr wheel, offline, on text we render."""
from __future__ import annotations

import json
import socket

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageDraw, ImageFont

from annotators.base import Failed, MissingWeightsError
from schemas.fonts import find_font
from annotators.ocr import PaddleOCRAnnotator, tiny_config
from annotators.base import sha256_file
from annotators.ppocr_models import WHEEL_MODELS, prepare_model, wheel_file
from schemas.schema import empty_row, rows_to_table
from schemas.verbalize import OCR_PREAMBLE, VerbalizeConfig, verbalize_ocr, verbalize_row

SIZE = 490
TEXT = "HELLO WORLD 2026"


def render(lines: list[tuple[str, tuple[int, int], int]], upside_down: list[tuple[str, tuple[int, int]]] = (),
           size: tuple[int, int] = (SIZE, SIZE)):
    """A white (width, height) RGB image with black text; returns it and each upright line's normalized box."""
    font_path = str(find_font())
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    boxes = []
    for text, xy, font_size in lines:
        font = ImageFont.truetype(font_path, font_size)
        draw.text(xy, text, fill="black", font=font)
        x0, y0, x1, y1 = draw.textbbox(xy, text, font=font)
        boxes.append(np.array([x0, y0, x1, y1]) / (size * 2))
    for text, xy in upside_down:
        # Rendered upright on a strip, then turned 180°: with no text-line orientation model,
        # PP-OCR reads it as something else, at a low confidence.
        strip = Image.new("RGB", (size[0], 60), "white")
        ImageDraw.Draw(strip).text((xy[0], 10), text, fill="black", font=ImageFont.truetype(font_path, 36))
        image.paste(strip.rotate(180), (0, xy[1]))
    return np.asarray(image), boxes


class NetworkGuard:
    """Records (and refuses) every attempt to resolve an internet host or open a connection.

    Name lookups count too: without a network, PaddleX's model-hoster check fails at DNS and
    never reaches connect().
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.attempts: list[object] = []
        real_connect = socket.socket.connect
        real_getaddrinfo = socket.getaddrinfo

        def getaddrinfo(host, *args, **kwargs):
            if host not in (None, "localhost", "::1") and not str(host).startswith("127."):
                self.attempts.append(host)
                raise socket.gaierror(f"test forbids network access (resolving {host})")
            return real_getaddrinfo(host, *args, **kwargs)

        def connect(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                self.attempts.append(address)
                raise OSError(f"test forbids network access (to {address})")
            return real_connect(sock, address)

        def create_connection(address, *args, **kwargs):
            self.attempts.append(address)
            raise OSError(f"test forbids network access (to {address})")

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket, "create_connection", create_connection)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(scope="module")
def options(tmp_path_factory) -> dict:
    return tiny_config(tmp_path_factory.mktemp("ocr"))


@pytest.fixture(scope="module")
def guarded():
    """The shared annotator (min_score 0: stores everything), imported and built with no network."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        guard = NetworkGuard(monkeypatch)
        yield guard, monkeypatch


@pytest.fixture(scope="module")
def ocr(options, guarded) -> PaddleOCRAnnotator:
    return PaddleOCRAnnotator(PaddleOCRAnnotator.Config(**{**options, "min_score": 0.0}))


def test_reads_rendered_text_with_normalized_polygon(ocr):
    image, (box,) = render([(TEXT, (40, 200), 36)])
    (result,) = ocr(image[None])
    (line,) = result["ocr"]
    assert line["text"] == TEXT
    assert 0.85 <= line["score"] <= 1.0
    polygon = np.array(line["polygon"])  # (4, 2) normalized (x, y)
    assert polygon.shape == (4, 2) and (polygon >= 0).all() and (polygon <= 1).all()
    found = np.array([*polygon.min(0), *polygon.max(0)])
    # The detected quad hugs the drawn text (DB's unclip pads it by a few pixels).
    np.testing.assert_allclose(found, box, atol=0.03)


def test_polygon_is_normalized_per_axis_on_a_wide_image(ocr):
    image, (box,) = render([("EXIT 12", (400, 40), 40)], size=(640, 200))
    (result,) = ocr(image[None])  # (1, 200, 640, 3): x divided by 640, y by 200
    (line,) = result["ocr"]
    assert line["text"] == "EXIT 12"
    polygon = np.array(line["polygon"]) * (640, 200)  # (4, 2) back in pixels
    # Within DB's unclip padding (~10 px for 40 px text); a swapped axis would be off by hundreds.
    np.testing.assert_allclose([*polygon.min(0), *polygon.max(0)], box * (640, 200, 640, 200), atol=12)


def test_batch_keeps_order_and_reads_several_lines(ocr):
    two_lines, _ = render([("MOAI PIPELINE", (30, 60), 40), ("OCR 490", (200, 380), 40)])
    one_line, _ = render([(TEXT, (40, 200), 36)])
    blank = np.full((SIZE, SIZE, 3), 255, np.uint8)
    results = ocr(np.stack([two_lines, blank, one_line]))
    assert [[line["text"] for line in r["ocr"]] for r in results] == [["MOAI PIPELINE", "OCR 490"], [], [TEXT]]
    top, bottom = (np.array(line["polygon"])[:, 1].mean() for line in results[0]["ocr"])
    assert top < 0.25 < 0.7 < bottom


def test_storage_threshold_and_moai_verbalization(ocr, options):
    image, _ = render([(TEXT, (40, 60), 36)], upside_down=[(TEXT, (40, 300))])
    (stored,) = ocr(image[None])
    scores = {line["text"]: line["score"] for line in stored["ocr"]}
    assert scores[TEXT] >= 0.85
    low = [line for line in stored["ocr"] if line["score"] < 0.85]
    assert low, f"the upside-down line should read at a low confidence: {scores}"

    # MoAI keeps only strings at >= 0.85: the low line is stored but not verbalized.
    assert verbalize_ocr(stored["ocr"]) == f"{OCR_PREAMBLE}{TEXT}."
    assert verbalize_ocr(stored["ocr"], VerbalizeConfig(ocr_min_score=0.0)).count(", and ") == len(stored["ocr"]) - 1

    # The storage threshold drops lines below it before they are written.
    strict = PaddleOCRAnnotator(PaddleOCRAnnotator.Config(**{**options, "min_score": 0.85}))
    (kept,) = strict(image[None])
    assert [line["text"] for line in kept["ocr"]] == [line["text"] for line in stored["ocr"] if line["score"] >= 0.85]


def test_result_fits_the_annotation_schema(ocr):
    image, _ = render([(TEXT, (40, 200), 36)])
    (result,) = ocr(image[None])
    row = empty_row("img-0", "memory://img-0", SIZE, SIZE)
    row.update(result)
    row.update(verbalize_row(row))
    table = rows_to_table([row], provenance={"ocr": ocr.provenance()})
    assert table.column("ocr").type == pa.list_(table.schema.field("ocr").type.value_type)
    assert table.column("text_ocr").to_pylist() == [f"{OCR_PREAMBLE}{TEXT}."]
    assert table.column("ocr").to_pylist()[0][0]["text"] == TEXT


@pytest.mark.parametrize("shape", [(1, 1, 1, 3), (3, 2, 2, 3), (2, 5, 490, 3), (1, 16, 16, 3)])
def test_tiny_images_give_one_empty_or_failed_result_each(ocr, shape):
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    results = ocr(images)
    assert len(results) == shape[0]
    for result in results:
        if isinstance(result, Failed):
            continue
        assert list(result) == ["ocr"]
        for line in result["ocr"]:  # noise may read as a character or two; still well-formed
            assert isinstance(line["text"], str) and 0.0 <= line["score"] <= 1.0
            assert all(0.0 <= v <= 1.0 for point in line["polygon"] for v in point)


def test_empty_images_fail_per_image(ocr):
    results = ocr(np.zeros((2, 0, 7, 3), np.uint8))
    assert len(results) == 2 and all(isinstance(r, Failed) and "empty" in r.message for r in results)


def test_one_failing_image_does_not_fail_its_batch(ocr, monkeypatch):
    # Fault injection: the library raises whenever the poisoned image is part of its input.
    good, _ = render([(TEXT, (40, 200), 36)])
    poisoned = np.full_like(good, 7)
    real_predict = ocr.pipeline.predict

    def predict(images, **kwargs):
        if any(image[0, 0, 0] == 7 for image in images):
            raise RuntimeError("decoder exploded")
        return real_predict(images, **kwargs)

    monkeypatch.setattr(ocr.pipeline, "predict", predict)
    first, second, third = ocr(np.stack([good, poisoned, good]))
    assert first["ocr"][0]["text"] == TEXT == third["ocr"][0]["text"]
    assert isinstance(second, Failed) and "decoder exploded" in second.message


def test_nothing_touches_the_network(ocr, guarded):
    guard, _ = guarded  # active while paddleocr was imported, the models built, and now run
    image, _ = render([(TEXT, (40, 200), 36)])
    assert ocr(image[None])[0]["ocr"][0]["text"] == TEXT
    assert guard.attempts == []
    with pytest.raises(OSError, match="forbids network"):
        socket.getaddrinfo("huggingface.co", 443)  # the guard itself is live
    guard.attempts.clear()


def test_provenance_names_models_and_hashes(ocr, options):
    provenance = json.loads(json.dumps(ocr.provenance()))  # JSON-serializable, as Parquet metadata
    assert provenance["models"]["det"]["name"] == "PP-OCRv6_small_det"
    rec = provenance["models"]["rec"]
    assert rec["sha256"]["inference.onnx"] == sha256_file(wheel_file(WHEEL_MODELS["PP-OCRv6_small_rec"]))
    assert provenance["config"]["min_score"] == 0.0 and provenance["library"]["paddleocr"].startswith("3.")
    assert provenance["use_textline_orientation"] is False


def test_model_folders_are_reproducible_and_idempotent(tmp_path, options):
    folder = prepare_model("PP-OCRv4_mobile_rec", tmp_path / "a")
    again = prepare_model("PP-OCRv4_mobile_rec", tmp_path / "b")
    for name in ("inference.yml", "inference.onnx", "source.json"):
        assert (folder / name).read_bytes() == (again / name).read_bytes()
    stamp = (folder / "inference.onnx").stat().st_mtime_ns
    assert prepare_model("PP-OCRv4_mobile_rec", tmp_path / "a") == folder
    assert (folder / "inference.onnx").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert json.loads((folder / "source.json").read_text())["distribution"] == "rapidocr_onnxruntime"


def test_missing_or_incomplete_folders_name_what_is_missing(tmp_path, monkeypatch, options):
    monkeypatch.setenv("PADDLE_PDX_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("MOAI_MODELS", str(tmp_path / "models"))
    with pytest.raises(MissingWeightsError, match="PP-OCRv5_server_det.*annotators.ppocr_models"):
        PaddleOCRAnnotator(PaddleOCRAnnotator.Config(det_model_name="PP-OCRv5_server_det"))  # ships in no wheel
    with pytest.raises(MissingWeightsError, match="does not exist"):
        PaddleOCRAnnotator(PaddleOCRAnnotator.Config(**{**options, "rec_model_dir": str(tmp_path / "nowhere")}))
    (tmp_path / "det").mkdir()
    (tmp_path / "det" / "inference.yml").write_text("Global: {}\n")
    with pytest.raises(MissingWeightsError, match="lacks inference.onnx"):
        PaddleOCRAnnotator(PaddleOCRAnnotator.Config(det_model_dir=str(tmp_path / "det"),
                                                     rec_model_dir=str(tmp_path / "det")))
    with pytest.raises(MissingWeightsError, match="lacks inference.json or inference.pdmodel, inference.pdiparams"):
        PaddleOCRAnnotator(PaddleOCRAnnotator.Config(**{**options, "engine": "paddle"}))


def test_default_folders_are_prepared_from_the_wheels_in_the_models_root(tmp_path, monkeypatch):
    monkeypatch.setenv("PADDLE_PDX_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("MOAI_MODELS", str(tmp_path / "models"))
    annotator = PaddleOCRAnnotator(PaddleOCRAnnotator.Config())
    for folder, name in ((annotator.det_dir, "PP-OCRv6_small_det"), (annotator.rec_dir, "PP-OCRv6_small_rec")):
        assert folder == tmp_path / "models" / "ppocr" / name
        assert (folder / "inference.onnx").is_file() and (folder / "source.json").is_file()


@pytest.mark.parametrize("field, value, message", [
    ("engine", "tensorrt", "engine='tensorrt'"), ("device", "tpu", "device 'tpu'"),
    ("batch_size", 0, "batch_size=0"), ("min_score", 1.5, "min_score=1.5"),
    ("det_limit_type", "both", "det_limit_type='both'"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        PaddleOCRAnnotator.Config(**{field: value})

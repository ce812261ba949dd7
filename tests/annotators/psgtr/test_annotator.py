"""The `sgg` annotator on the tiny random-weight PSGTR, and the scene-graph rows it writes."""
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from annotators import registry
from annotators.base import Failed, MissingWeightsError
from annotators.psgtr import annotator as psgtr_annotator
from annotators.psgtr.annotator import PSGTRAnnotator, tiny_config, to_scene_graph
from annotators.psgtr.postprocess import PostprocessConfig
from schemas.schema import SCENE_GRAPH
from schemas.verbalize import VerbalizeConfig, verbalize_scene_graph

from .test_postprocess import load, run_case


@pytest.fixture(scope="module")
def options(tmp_path_factory):
    return tiny_config(tmp_path_factory.mktemp("psgtr"))


@pytest.fixture(scope="module")
def annotator(options):
    return registry.build("sgg", options)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (3, 72, 96, 3), dtype=np.uint8)


def test_rows_follow_the_schema(annotator, images):
    rows = annotator(images)
    assert len(rows) == 3
    graphs = [row["scene_graph"] for row in rows]
    pa.array(graphs, type=SCENE_GRAPH)  # raises on any field/type mismatch
    for graph in graphs:
        assert graph["objects"] and graph["relations"]  # thresholds lowered in the tiny config
        for obj in graph["objects"]:
            assert 0 <= obj["label_id"] < 133 and obj["label"] == f"class_{obj['label_id']:03d}"
            x0, y0, x1, y1 = obj["box"]
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        for rel in graph["relations"]:
            assert 0 <= rel["subject"] < len(graph["objects"]) and 0 <= rel["object"] < len(graph["objects"])
            assert 1 <= rel["predicate_id"] <= 56 and rel["predicate"] == f"predicate_{rel['predicate_id'] - 1:02d}"
            assert 0 < rel["score"] <= 1


def test_batch_equals_single_images(options, images):
    """Same scene graphs batched or one by one. In float64, so that batch-size-dependent float32 rounding
    (~1e-6, see test_model) cannot flip the near-ties of a random-weight model's masks."""
    annotator = PSGTRAnnotator(PSGTRAnnotator.Config(**options))
    annotator.model.double()
    batched = annotator(images[:2])
    for image, row in zip(images[:2], batched):
        single = annotator(image[None])[0]["scene_graph"]
        graph = row["scene_graph"]
        assert [(o["label_id"], o["box"]) for o in graph["objects"]] == \
            [(o["label_id"], o["box"]) for o in single["objects"]]
        assert [(r["subject"], r["object"], r["predicate_id"]) for r in graph["relations"]] == \
            [(r["subject"], r["object"], r["predicate_id"]) for r in single["relations"]]
        np.testing.assert_allclose([r["score"] for r in graph["relations"]], [r["score"] for r in single["relations"]],
                                   rtol=1e-6)


def test_moai_compat_feeds_bgr(options, annotator, images):
    moai = PSGTRAnnotator(PSGTRAnnotator.Config(**{**options, "compat": "moai"}))
    pixels_moai = moai.preprocess(images)[0]
    pixels_flipped = annotator.preprocess(np.ascontiguousarray(images[..., ::-1]))[0]
    torch.testing.assert_close(pixels_moai, pixels_flipped)
    assert not torch.equal(pixels_moai, annotator.preprocess(images)[0])
    assert moai.post_cfg.class_131_quirk and not annotator.post_cfg.class_131_quirk


def test_resize_and_scale_factor(annotator, images):
    pixels, sizes, scales = annotator.preprocess(images[:1])   # 72x96 fit into (256, 160): s = 160/72
    assert sizes.tolist() == [[160, 213]] and pixels.shape == (1, 3, 160, 224)
    assert pixels[0, :, :, 213:].abs().max() == 0  # zero padding after normalization
    np.testing.assert_allclose(scales[0], [213 / 96, 160 / 72] * 2, rtol=1e-6)


def test_one_failed_image_does_not_sink_the_batch(annotator, images, monkeypatch):
    real = psgtr_annotator.postprocess
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(psgtr_annotator, "postprocess", flaky)
    rows = annotator(images)
    assert isinstance(rows[1], Failed) and "boom" in rows[1].message
    assert "scene_graph" in rows[0] and "scene_graph" in rows[2]


def test_scene_graph_and_text_from_openpsg_result(shared_dir):
    """c02 through our schema and MoAI's verbalizer, with the real vocabularies."""
    classes = json.loads((shared_dir / "vocab" / "coco_panoptic_133.json").read_text())
    predicates = json.loads((shared_dir / "vocab" / "psg_predicates_56.json").read_text())
    result = run_case(load(shared_dir, "c02"), PostprocessConfig(class_131_quirk=True, mask_resize="stretch"))
    graph = to_scene_graph(result, classes, predicates)
    labels = [o["label"] for o in graph["objects"]]
    assert labels[:5] == ["person", "car", "tv", "dog", "chair"] and "sky-other-merged" in labels
    assert graph["objects"][0]["box"] == [0.0, 0.2, 0.3, 0.45]   # from the mask, x1/y1 exclusive
    dog_grass = [r["predicate"] for r in graph["relations"] if labels[r["subject"]] == "dog"]
    assert dog_grass == ["walking on", "standing on"]             # one query, two triplets
    moai = to_scene_graph(result, classes, predicates, predicate_from_argmax=True)
    assert [r["predicate"] for r in moai["relations"] if labels[r["subject"]] == "dog"] == ["walking on"] * 2
    assert verbalize_scene_graph(graph, VerbalizeConfig()) == (
        "The image includes relationships between objects: person is on chair, and car is parked on road, "
        "and person is over sky, and tv is in shelf.")


def test_empty_result_gives_empty_graph(shared_dir):
    result = run_case(load(shared_dir, "c01"))
    assert to_scene_graph(result, [f"c{i}" for i in range(133)], [f"p{i}" for i in range(56)]) == \
        {"objects": [], "relations": []}


def test_tiny_model_is_deterministic(options, tmp_path):
    from annotators.base import sha256_file as file_sha256
    again = tiny_config(tmp_path / "nested" / "dir")
    assert file_sha256(Path(again["model_dir"]) / "model.safetensors") == \
        file_sha256(Path(options["model_dir"]) / "model.safetensors")
    assert tiny_config(tmp_path / "nested" / "dir") == again  # reuses the folder


def test_config_errors(options, tmp_path, monkeypatch):
    monkeypatch.setenv("MOAI_MODELS", str(tmp_path / "models"))
    assert PSGTRAnnotator.Config().model_dir == str(tmp_path / "models" / "psgtr_r50")  # the published default
    with pytest.raises(ValueError, match="compat"):
        PSGTRAnnotator.Config(**{**options, "compat": "published"})
    with pytest.raises(ValueError, match="dtype"):
        PSGTRAnnotator.Config(**{**options, "dtype": "float16"})
    with pytest.raises(ValueError, match="relation_score_threshold"):
        PSGTRAnnotator.Config(**{**options, "relation_score_threshold": 3})
    with pytest.raises(MissingWeightsError, match="annotators.psgtr.convert"):
        PSGTRAnnotator(PSGTRAnnotator.Config(model_dir=str(tmp_path)))


def test_provenance(annotator):
    prov = annotator.provenance()
    json.dumps(prov)
    assert prov["annotator"] == "sgg" and prov["compat"] == "none" and len(prov["weights_sha256"]) == 64
    assert prov["classes"]["size"] == 133 and prov["predicates"]["size"] == 56


def _bf16_rows(options, device):
    annotator = PSGTRAnnotator(PSGTRAnnotator.Config(**{**options, "device": device, "dtype": "bfloat16"}))
    rows = annotator(np.random.default_rng(1).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8))
    pa.array([row["scene_graph"] for row in rows], type=SCENE_GRAPH)
    assert all(row["scene_graph"]["relations"] for row in rows)
    assert annotator.provenance()["dtype"] == "bfloat16"


def test_bf16_annotator_cpu(options):
    _bf16_rows(options, "cpu")


@pytest.mark.gpu
def test_bf16_annotator_gpu(options):
    _bf16_rows(options, "cuda")

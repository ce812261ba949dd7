"""YOLO-World annotator: tiny random-weight YOLOv8n-worldv2, class embeddings from a CLIP text tower."""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from annotators.base import MissingWeightsError
from annotators.clip_text import CLIPTextEncoder
from annotators.yolo_world import YOLOWorldAnnotator, tiny_config
from tests.annotators import real_images, round_trip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_config(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def annotator(tiny):
    # Random weights score ~1e-4: threshold 0 lets the plumbing show boxes.
    return YOLOWorldAnnotator(YOLOWorldAnnotator.Config(**tiny, threshold=0.0, max_det=20))


@pytest.fixture(scope="module")
def images():
    return real_images(3)


def test_class_embeddings_come_from_the_clip_text_tower(annotator, tiny):
    world = annotator.yolo.model
    expected = CLIPTextEncoder(tiny["text_model"])(annotator.vocabulary.names)  # (80, 512)
    assert world.txt_feats.shape == (1, 80, 512)
    torch.testing.assert_close(world.txt_feats[0], torch.from_numpy(expected))
    torch.testing.assert_close(world.txt_feats[0].norm(dim=-1), torch.ones(80))
    assert world.model[-1].nc == 80 and world.names[15] == "cat"


def test_results_follow_the_schema(annotator, images, tmp_path):
    results = annotator(images)
    assert len(results) == 3 and all(set(r) == {"detections"} for r in results)
    assert all(0 < len(r["detections"]) <= 20 for r in results)
    round_trip(results, annotator.provenance(), tmp_path)
    for det in (d for r in results for d in r["detections"]):
        assert det["label"] == annotator.vocabulary.names[det["query_index"]]
        assert all(0.0 <= v <= 1.0 for v in det["box"]) and det["box"][0] <= det["box"][2]
    provenance = annotator.provenance()
    assert provenance["weights_sha256"]["model.safetensors"] and provenance["vocabulary"]["size"] == 80


def test_batch_equals_single_images(annotator, images):
    batched = annotator(images)
    single = [annotator(images[i:i + 1])[0] for i in range(len(images))]
    for b, s in zip(batched, single):
        assert [d["query_index"] for d in b["detections"]] == [d["query_index"] for d in s["detections"]]
        np.testing.assert_allclose([d["box"] for d in b["detections"]], [d["box"] for d in s["detections"]],
                                   atol=1e-4)


def test_rgb_arrays_are_read_as_rgb(annotator, images):
    """ultralytics reads arrays as BGR and PIL images as RGB: ours on RGB arrays == ultralytics on PIL."""
    from PIL import Image
    ours = annotator(images[:1])[0]["detections"]
    cfg = annotator.config
    (reference,) = annotator.yolo.predict(Image.fromarray(images[0]), conf=cfg.threshold, iou=cfg.iou,
                                          imgsz=cfg.imgsz, max_det=cfg.max_det, verbose=False)
    assert [d["score"] for d in ours] == pytest.approx(reference.boxes.conf.tolist(), abs=1e-5)
    flipped = annotator(np.ascontiguousarray(images[:1, ..., ::-1]))[0]["detections"]
    assert [d["score"] for d in flipped] != pytest.approx([d["score"] for d in ours], abs=1e-5)


def test_a_user_vocabulary_sets_new_classes(tiny, tmp_path, images):
    words = tmp_path / "mine.txt"
    words.write_text("zebra\nlamp post\nkettle\n")
    annotator = YOLOWorldAnnotator(YOLOWorldAnnotator.Config(**{**tiny, "vocabulary": (str(words),)},
                                                             threshold=0.0))
    assert annotator.yolo.model.txt_feats.shape == (1, 3, 512) and annotator.yolo.model.model[-1].nc == 3
    labels = {d["label"] for r in annotator(images[:1]) for d in r["detections"]}
    assert labels and labels <= {"zebra", "lamp post", "kettle"}


def test_checkpoints_errors(tiny, tmp_path):
    with pytest.raises(MissingWeightsError, match="github.com/ultralytics/assets"):
        YOLOWorldAnnotator(YOLOWorldAnnotator.Config(**{**tiny, "model": str(tmp_path / "none.pt")}))
    pickled = tmp_path / "x.pt"
    pickled.write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="allow_pickle=True"):
        YOLOWorldAnnotator(YOLOWorldAnnotator.Config(**{**tiny, "model": str(pickled)}))
    with pytest.raises(MissingWeightsError, match="clip-text-nowhere"):
        YOLOWorldAnnotator(YOLOWorldAnnotator.Config(**{**tiny, "text_model": str(tmp_path / "clip-text-nowhere")}))
    with pytest.raises(ValueError, match="float16"):
        YOLOWorldAnnotator.Config(dtype="bfloat16")


@pytest.mark.gpu
def test_cuda_float16(annotator, images):
    gpu = YOLOWorldAnnotator(replace(annotator.config, device="cuda", dtype="float16"))
    cpu_results, gpu_results = annotator(images), gpu(images)
    assert [len(r["detections"]) for r in gpu_results] == [len(r["detections"]) for r in cpu_results]
    assert all(set(r) == {"detections"} for r in gpu_results)

"""OWLv2 annotator on a tiny random-weight model with a real CLIP tokenizer and processor."""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from annotators.base import Failed, MissingWeightsError
from annotators.owlv2 import MOAI_CHECKPOINT, OWLv2Annotator, tiny_config
from annotators.vocab import load_vocabulary
from tests.annotators import real_images, round_trip, seed_hf_cache, use_hf_cache


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_config(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def annotator(tiny):
    return OWLv2Annotator(OWLv2Annotator.Config(**tiny))


@pytest.fixture(scope="module")
def images():
    return real_images(3)


def test_results_follow_the_schema(annotator, images, tmp_path):
    results = annotator(images)
    assert len(results) == 3 and all(set(r) == {"detections"} for r in results)
    assert any(r["detections"] for r in results)
    table = round_trip(results, annotator.provenance(), tmp_path)
    for result in results:
        for det in result["detections"]:
            assert det["score"] > annotator.config.threshold
            assert det["label"] == annotator.vocabulary.names[det["query_index"]]
    read_back = table.column("detections").to_pylist()
    assert [len(d) for d in read_back] == [len(r["detections"]) for r in results]
    assert annotator.provenance()["vocabulary"] == load_vocabulary("ultralytics:coco").provenance()


def test_cached_queries_give_the_published_forward(annotator, images):
    """Image tower + heads against cached text embeddings == the model run with all queries per image."""
    inputs = annotator.processor(text=list(annotator.vocabulary.names), images=list(images[:1]),
                                 return_tensors="pt")
    with torch.inference_mode():
        published = annotator.model(**inputs)
    ours = annotator.forward(images[:1])
    torch.testing.assert_close(ours.logits, published.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.pred_boxes, published.pred_boxes)


@pytest.fixture
def text_tower_calls(monkeypatch) -> list:
    """One entry per forward of OWLv2's text tower."""
    from transformers.models.owlv2 import modeling_owlv2
    calls = []
    forward = modeling_owlv2.Owlv2TextTransformer.forward

    def counting(self, *args, **kwargs):
        calls.append(1)
        return forward(self, *args, **kwargs)
    monkeypatch.setattr(modeling_owlv2.Owlv2TextTransformer, "forward", counting)
    return calls


def test_text_queries_are_encoded_once_per_instance(tiny, images, text_tower_calls):
    calls = text_tower_calls
    annotator = OWLv2Annotator(OWLv2Annotator.Config(**tiny, text_batch_size=32, query_cache=None))
    assert len(calls) == 3  # 80 names in chunks of 32, at construction
    for _ in range(3):
        annotator(images)
    assert len(calls) == 3  # no batch re-encodes the queries


def test_encoded_queries_are_kept_on_disk_for_the_next_actor(tiny, images, text_tower_calls, tmp_path):
    calls = text_tower_calls
    first = OWLv2Annotator(OWLv2Annotator.Config(**tiny, query_cache=str(tmp_path)))
    assert len(calls) == 1 and len(list((tmp_path / "owlv2-queries").glob("*.safetensors"))) == 1
    second = OWLv2Annotator(OWLv2Annotator.Config(**tiny, query_cache=str(tmp_path)))
    assert len(calls) == 1  # loaded, not encoded
    assert torch.equal(first.query_embeds, second.query_embeds)
    assert [r["detections"] for r in first(images)] == [r["detections"] for r in second(images)]
    other = OWLv2Annotator(OWLv2Annotator.Config(**{**tiny, "vocabulary": ("ultralytics:voc",)}, query_cache=str(tmp_path)))
    assert len(calls) == 2 and other.query_embeds.shape[0] == 20  # another vocabulary: another key


def test_batch_equals_single_images(annotator, images):
    batched = annotator(images)
    single = [annotator(images[i:i + 1])[0] for i in range(len(images))]
    for b, s in zip(batched, single):
        assert [d["query_index"] for d in b["detections"]] == [d["query_index"] for d in s["detections"]]
        np.testing.assert_allclose([d["box"] for d in b["detections"]], [d["box"] for d in s["detections"]],
                                   atol=1e-5)
        np.testing.assert_allclose([d["score"] for d in b["detections"]],
                                   [d["score"] for d in s["detections"]], atol=1e-5)


def test_threshold_and_unclipped_boxes_on_crafted_logits(annotator):
    from transformers.models.owlv2.modeling_owlv2 import Owlv2ObjectDetectionOutput

    def logit(p):
        return float(np.log(p / (1 - p)))
    logits = torch.full((1, 3, 80), -20.0)
    logits[0, 0, 15] = logit(0.6)    # cat, kept and verbalized
    logits[0, 1, 16] = logit(0.12)   # dog, stored (>= 0.1), not verbalized
    logits[0, 2, 0] = logit(0.05)    # person, dropped
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.95, 0.1, 0.2, 0.4], [0.5, 0.5, 1.0, 1.0]]])  # cx, cy, w, h
    (result,) = annotator.postprocess(Owlv2ObjectDetectionOutput(logits=logits, pred_boxes=boxes), [(490, 490)])
    dets = result["detections"]
    assert [(d["label"], d["query_index"]) for d in dets] == [("cat", 15), ("dog", 16)]
    assert [d["score"] for d in dets] == pytest.approx([0.6, 0.12])
    assert dets[0]["box"] == pytest.approx([0.4, 0.3, 0.6, 0.7], abs=1e-6)
    assert dets[1]["box"] == pytest.approx([0.85, -0.1, 1.05, 0.3], abs=1e-6)  # not clipped, as MoAI

    from schemas.verbalize import verbalize_detections
    assert verbalize_detections(dets) == ("The image includes bounding box coordinates and their objects: "
                                          "[0.40, 0.30, 0.60, 0.70] cat.")


def test_an_image_that_fails_gives_its_own_error(annotator, images, monkeypatch):
    forward = annotator.forward

    def fail_on_dark(batch):
        if (batch.reshape(len(batch), -1).max(axis=1) == 0).any():
            raise RuntimeError("cannot process an all-black image")
        return forward(batch)
    monkeypatch.setattr(annotator, "forward", fail_on_dark)
    batch = images.copy()
    batch[1] = 0
    results = annotator(batch)
    assert isinstance(results[1], Failed) and "all-black" in results[1].message
    assert results[0] == annotator(images[:1])[0] and not isinstance(results[2], Failed)


def test_vocabulary_is_required_and_named(tiny):
    assert OWLv2Annotator.Config(model=tiny["model"]).vocabulary == ("moai:owlv2",)  # MoAI's, shipped
    with pytest.raises(ValueError, match="moai:owlv2"):
        OWLv2Annotator.Config(model=tiny["model"], vocabulary=())
    with pytest.raises(ValueError, match="unknown package vocabulary"):
        OWLv2Annotator(OWLv2Annotator.Config(model=tiny["model"], vocabulary="ultralytics:nope"))


def test_user_vocabulary_file(tiny, tmp_path, images):
    words = tmp_path / "mine.txt"
    words.write_text("zebra\nlamp post\n")
    annotator = OWLv2Annotator(OWLv2Annotator.Config(model=tiny["model"], vocabulary=str(words), threshold=0.0))
    assert annotator.query_embeds.shape[0] == 2
    labels = {d["label"] for r in annotator(images[:1]) for d in r["detections"]}
    assert labels <= {"zebra", "lamp post"} and labels
    assert annotator.provenance()["vocabulary"]["name"] == "mine"


def test_missing_weights_name_the_model(tmp_path, monkeypatch):
    with pytest.raises(MissingWeightsError, match="nowhere"):
        OWLv2Annotator(OWLv2Annotator.Config(model=str(tmp_path / "nowhere"), vocabulary="ultralytics:coco"))
    use_hf_cache(monkeypatch, tmp_path / "empty-hub")
    with pytest.raises(MissingWeightsError, match=f"hf download {MOAI_CHECKPOINT}"):
        OWLv2Annotator(OWLv2Annotator.Config(vocabulary="ultralytics:coco"))


def test_moai_profile_loads_the_published_id_from_the_hf_cache(tiny, tmp_path, monkeypatch, images, shared_dir):
    use_hf_cache(monkeypatch, seed_hf_cache(Path(tiny["model"]), MOAI_CHECKPOINT, tmp_path / "hub"))
    vocab = (str(shared_dir / "vocab" / "ade20k_847.json"), str(shared_dir / "vocab" / "imagenet_1k.json"))
    annotator = OWLv2Annotator(OWLv2Annotator.Config(vocabulary=vocab))  # MoAI's id, queries, threshold
    assert annotator.query_embeds.shape[0] == 1847
    assert annotator.provenance()["model"] == MOAI_CHECKPOINT and annotator.provenance()["weights_sha256"]
    assert annotator.provenance()["vocabulary"]["size"] == 1847
    (result,) = annotator(images[:1])
    assert all(d["score"] > 0.1 for d in result["detections"])


@pytest.mark.gpu
def test_cuda_bfloat16_matches_cpu(tiny, images):
    cpu = OWLv2Annotator(OWLv2Annotator.Config(**tiny))
    gpu = OWLv2Annotator(replace(cpu.config, device="cuda", dtype="bfloat16"))
    assert gpu.query_embeds.dtype == torch.bfloat16
    torch.testing.assert_close(gpu.forward(images).logits.cpu(), cpu.forward(images).logits, atol=0.1, rtol=0.05)
    assert all(set(r) == {"detections"} for r in gpu(images))

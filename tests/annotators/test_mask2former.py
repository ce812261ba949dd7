"""Mask2Former panoptic annotator on a tiny random-weight model: real processor and post-processing."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from annotators.base import Failed, MissingWeightsError
from annotators.boxes import mask_box, masks_boxes, normalize_box
from annotators.mask2former import MOAI_CHECKPOINT, Mask2FormerAnnotator, tiny_config
from schemas import decode_ps_map
from tests.annotators import real_images, round_trip, seed_hf_cache, use_hf_cache

# Random weights score every query ~1/134, which MoAI's thresholds reject: plumbing runs lower them.
PLUMBING = {"threshold": 0.0, "mask_threshold": 0.001, "overlap_mask_area_threshold": 0.0}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_config(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def annotator(tiny):
    return Mask2FormerAnnotator(Mask2FormerAnnotator.Config(**tiny, **PLUMBING))


@pytest.fixture(scope="module")
def images():
    return real_images(3)


def test_results_follow_the_schema(annotator, images, tmp_path):
    results = annotator(images)
    assert len(results) == 3 and all(set(r) == {"panoptic", "ps_map"} for r in results)
    table = round_trip(results, annotator.provenance(), tmp_path)
    for result, ps_png in zip(results, table.column("ps_map").to_pylist()):
        segment_map = decode_ps_map(ps_png)
        assert segment_map.shape == (490, 490)
        assert result["panoptic"], "plumbing thresholds should leave at least one segment"
        for segment in result["panoptic"]:
            mask = segment_map == segment["segment_id"]
            assert segment["area"] == mask.sum() > 0
            assert segment["box"] == pytest.approx(normalize_box(mask_box(mask), 490, 490))
            assert segment["label"] == annotator.id2label[segment["label_id"]]
            assert segment["is_thing"] == (segment["label_id"] < 80)
    assert table.column("text_ps").to_pylist()[0].startswith("The image includes bounding box coordinates")


def test_batch_equals_single_images(annotator, images):
    batched = annotator(images)
    single = [annotator(images[i:i + 1])[0] for i in range(len(images))]
    for b, s in zip(batched, single):
        assert [seg["label_id"] for seg in b["panoptic"]] == [seg["label_id"] for seg in s["panoptic"]]
        assert [seg["score"] for seg in b["panoptic"]] == pytest.approx([seg["score"] for seg in s["panoptic"]],
                                                                           abs=1e-4)
        assert (decode_ps_map(b["ps_map"]) == decode_ps_map(s["ps_map"])).mean() > 0.999


def test_deterministic(tiny, images):
    a = Mask2FormerAnnotator(Mask2FormerAnnotator.Config(**tiny, **PLUMBING))
    b = Mask2FormerAnnotator(Mask2FormerAnnotator.Config(**tiny, **PLUMBING))
    assert a(images[:1]) == b(images[:1])
    assert a.provenance()["weights_sha256"] == b.provenance()["weights_sha256"]


def crafted_outputs(size=384):
    """Four queries on a 384x384 mask grid (the post-processor's own size, so no resampling blur).

    transformers compares `mask_threshold` with class score x mask probability, and gives every
    pixel to the kept query with the highest such product, so a background query fills the rest.
    """
    from transformers.models.mask2former.modeling_mask2former import (
        Mask2FormerForUniversalSegmentationOutput)
    classes = torch.full((1, 4, 134), -30.0)
    masks = torch.full((1, 4, size, size), -30.0)
    classes[0, 0, 0] = 10.0                     # person, p ~ 1.0, sure mask
    masks[0, 0, 10:50, 20:100] = 20.0
    classes[0, 1, 120] = 10.0                   # stuff, p ~ 1.0, but its mask is only 0.88 sure
    masks[0, 1, 200:300] = 2.0
    classes[0, 2, [5, 6]] = 0.0                 # p 0.45 + 0.45 over two labels, null 0.1
    classes[0, 2, 133] = float(np.log(0.1 / 0.45))
    masks[0, 2, 300:, 300:] = 20.0
    classes[0, 3, 121] = 10.0                   # background stuff: 0.993 everywhere else
    masks[0, 3] = 5.0
    masks[0, 3, 200:300] = -30.0
    masks[0, 3, 300:, 300:] = -1.0
    return Mask2FormerForUniversalSegmentationOutput(class_queries_logits=classes, masks_queries_logits=masks)


def test_moai_thresholds_on_crafted_logits(annotator):
    moai = replace(annotator.config, threshold=0.5, mask_threshold=0.95, overlap_mask_area_threshold=0.8)
    annotator.config = moai
    try:
        (result,) = annotator.postprocess(crafted_outputs(), [(384, 384)])
        # the 0.88-sure mask and the 0.45 class are rejected; their pixels stay 0 or go to the background
        assert [s["label_id"] for s in result["panoptic"]] == [0, 121]
        person = result["panoptic"][0]
        assert person["box"] == pytest.approx([20 / 384, 10 / 384, 100 / 384, 50 / 384])  # x1 = last col + 1
        assert person["area"] == 40 * 80 and person["is_thing"] and person["score"] > 0.99
        segment_map = decode_ps_map(result["ps_map"])
        assert (segment_map[200:300] == 0).all() and set(np.unique(segment_map)) == {0, 1, 2}

        annotator.config = replace(moai, threshold=0.4, mask_threshold=0.4)
        (looser,) = annotator.postprocess(crafted_outputs(), [(384, 384)])
        assert sorted(s["label_id"] for s in looser["panoptic"]) == [0, 5, 120, 121]
        stuff = next(s for s in looser["panoptic"] if s["label_id"] == 120)
        assert not stuff["is_thing"] and stuff["box"] == pytest.approx([0, 200 / 384, 1, 300 / 384])
        assert stuff["label"].endswith("-stuff")
    finally:
        annotator.config = replace(moai, **PLUMBING)


def test_box_from_mask_edges_match_detectron2():
    mask = np.zeros((6, 8), bool)
    mask[2, 3] = True
    assert mask_box(mask) == (3, 2, 4, 3)               # one pixel: x1 = col + 1, y1 = row + 1
    assert mask_box(np.ones((6, 8), bool)) == (0, 0, 8, 6)
    assert mask_box(np.zeros((6, 8), bool)) == (0, 0, 0, 0)  # empty mask: zero box, as BitMasks
    mask[5, 0] = True
    np.testing.assert_array_equal(masks_boxes(mask[None]), [[0, 2, 4, 6]])
    assert normalize_box((0, 2, 4, 6), 8, 6) == [0.0, 2 / 6, 0.5, 1.0]


def test_detectron2_backend_is_optional(tiny):
    try:
        import detectron2  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="box_backend='numpy' gives the same boxes"):
            Mask2FormerAnnotator(Mask2FormerAnnotator.Config(**tiny, box_backend="detectron2"))
    else:
        masks = np.zeros((1, 6, 8), bool)
        masks[0, 2:4, 3:5] = True
        np.testing.assert_array_equal(masks_boxes(masks, "detectron2"), masks_boxes(masks))


def test_an_image_that_fails_gives_its_own_error(annotator, images, monkeypatch):
    original = annotator._result
    calls = []

    def fail_second(image_result):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("ps_map holds segment id 300")
        return original(image_result)
    monkeypatch.setattr(annotator, "_result", fail_second)
    results = annotator(images)
    assert isinstance(results[1], Failed) and "segment id 300" in results[1].message
    assert not isinstance(results[0], Failed) and not isinstance(results[2], Failed)


def test_missing_weights_name_the_model(tmp_path, monkeypatch):
    with pytest.raises(MissingWeightsError, match=str(tmp_path / "nowhere")):
        Mask2FormerAnnotator(Mask2FormerAnnotator.Config(model=str(tmp_path / "nowhere")))
    use_hf_cache(monkeypatch, tmp_path / "empty-hub")
    with pytest.raises(MissingWeightsError, match=f"hf download {MOAI_CHECKPOINT}"):
        Mask2FormerAnnotator(Mask2FormerAnnotator.Config())


def test_moai_profile_loads_the_published_id_from_the_hf_cache(tiny, tmp_path, monkeypatch, images):
    from pathlib import Path
    use_hf_cache(monkeypatch, seed_hf_cache(Path(tiny["model"]), MOAI_CHECKPOINT, tmp_path / "hub"))
    annotator = Mask2FormerAnnotator(Mask2FormerAnnotator.Config())  # MoAI's id and thresholds
    assert annotator.provenance()["model"] == MOAI_CHECKPOINT
    assert annotator.provenance()["weights_sha256"]
    assert annotator(images[:1])[0]["panoptic"] == []  # random weights: nothing passes MoAI's bar


def test_config_errors_are_actionable():
    with pytest.raises(ValueError, match="mask_threshold"):
        Mask2FormerAnnotator.Config(mask_threshold=1.5)
    with pytest.raises(ValueError, match="device 'tpu'"):
        Mask2FormerAnnotator.Config(device="tpu")


@pytest.mark.gpu
def test_cuda_bfloat16_matches_cpu(tiny, images):
    cpu = Mask2FormerAnnotator(Mask2FormerAnnotator.Config(**tiny, **PLUMBING))(images)
    gpu = Mask2FormerAnnotator(Mask2FormerAnnotator.Config(**tiny, **PLUMBING, device="cuda",
                                                           dtype="bfloat16"))(images)
    for c, g in zip(cpu, gpu):
        assert [s["label_id"] for s in c["panoptic"]] == [s["label_id"] for s in g["panoptic"]]
        assert (decode_ps_map(c["ps_map"]) == decode_ps_map(g["ps_map"])).mean() > 0.95

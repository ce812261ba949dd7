"""A full-size twin of the `moai` profile's models: random weights at the published sizes, under the
published ids and paths, so the unchanged profile runs (and is timed) where the real weights are not.

    python -m annotators.fake_weights OUT
    HF_HOME=OUT/hf MOAI_MODELS=OUT python -m pipeline run --input IMAGES --output ANNOTATIONS

writes
  OUT/hf/hub/models--facebook--mask2former-swin-base-coco-panoptic  Swin-B (window 12, 384 px), 100 queries,
                                                                   the 133 COCO panoptic labels
  OUT/hf/hub/models--google--owlv2-base-patch16-ensemble           ViT-B/16 at 960 px, CLIP text tower 512 x 12
  OUT/psgtr_r50_epoch_60.pth -> OUT/psgtr_r50                      an OpenPSG-format checkpoint (585 keys),
                                                                   converted by annotators.psgtr.convert
  OUT/ppocr/PP-OCRv6_small_{det,rec}                               the real PP-OCR weights from the wheels

Every output of these models is noise: the twin is for tests, benchmarks and GPU timing only.
Idempotent: a model already written is kept.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from .mask2former import MOAI_CHECKPOINT as MASK2FORMER_ID
from .owlv2 import MOAI_CHECKPOINT as OWLV2_ID

MODELS = ("panoptic", "owod", "sgg", "ocr")


def hub_snapshot(hub: Path, repo_id: str) -> Path:
    """The snapshot folder of `repo_id` in a Hugging Face hub cache, as a download leaves it."""
    commit = hashlib.sha1(f"random init of {repo_id}".encode()).hexdigest()
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


def write_mask2former(folder: Path) -> Path:
    """Mask2Former Swin-B COCO panoptic: transformers' defaults are the published head (hidden 256,
    10 decoder layers, 6 pixel-decoder layers); the backbone and labels are set here."""
    import torch
    from transformers import (Mask2FormerConfig, Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor,
                              SwinConfig)
    from .vocab import load_vocabulary
    if (folder / "model.safetensors").is_file():
        return folder
    torch.manual_seed(0)
    labels = dict(enumerate(load_vocabulary("moai:coco_panoptic").names))
    backbone = SwinConfig(image_size=384, patch_size=4, embed_dim=128, depths=[2, 2, 18, 2],
                          num_heads=[4, 8, 16, 32], window_size=12, drop_path_rate=0.3,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=backbone, num_labels=len(labels), id2label=labels,
                               label2id={v: k for k, v in labels.items()}, num_queries=100,
                               use_pretrained_backbone=False)
    Mask2FormerForUniversalSegmentation(config).save_pretrained(folder)
    Mask2FormerImageProcessor(size={"shortest_edge": 384, "longest_edge": 1333}).save_pretrained(folder)
    return folder


def write_owlv2(folder: Path) -> Path:
    """OWLv2 B/16 ensemble: CLIP text tower (512 wide, 12 layers, 16 tokens) and ViT-B/16 at 960 px."""
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor
    from .clip_text import build_clip_tokenizer
    if (folder / "model.safetensors").is_file():
        return folder
    torch.manual_seed(0)
    config = Owlv2Config(text_config={"max_position_embeddings": 16},
                         vision_config={"image_size": 960, "patch_size": 16}, projection_dim=512)
    Owlv2ForObjectDetection(config).save_pretrained(folder)
    tokenizer = build_clip_tokenizer()
    tokenizer.model_max_length = 16
    Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 960, "width": 960}),
                   tokenizer=tokenizer).save_pretrained(folder)
    return folder


def write_psgtr(out: Path) -> Path:
    """A random PSGTR R50 saved as OpenPSG saves it (mmcv names, meta + state_dict), then converted
    exactly as a user converts the published file."""
    import torch
    from .psgtr.checkpoint import CONFIG_FILE, WEIGHTS_FILE
    from .psgtr.config import PSGTRConfig
    from .psgtr.convert import convert, openpsg_key
    from .psgtr.model import PSGTR
    model_dir = out / "psgtr_r50"
    if (model_dir / WEIGHTS_FILE).is_file() and (model_dir / CONFIG_FILE).is_file():
        return model_dir
    checkpoint = out / "psgtr_r50_epoch_60.pth"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        state = PSGTR(PSGTRConfig()).state_dict()
    torch.save({"meta": {"epoch": 60, "note": "random init, not the published weights"},
                "state_dict": {openpsg_key(k): v for k, v in state.items()}}, checkpoint)
    return convert(checkpoint, model_dir)


def write_twin(out: str | Path, models: tuple[str, ...] = MODELS) -> dict[str, Path]:
    """Write the twin under `out`; returns {model: folder}."""
    out = Path(out).absolute()
    hub = out / "hf" / "hub"
    written = {}
    if "panoptic" in models:
        written["panoptic"] = write_mask2former(hub_snapshot(hub, MASK2FORMER_ID))
    if "owod" in models:
        written["owod"] = write_owlv2(hub_snapshot(hub, OWLV2_ID))
    if "sgg" in models:
        written["sgg"] = write_psgtr(out)
    if "ocr" in models:
        from .ppocr_models import prepare_models
        written["ocr"] = out / "ppocr"
        prepare_models(written["ocr"])
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m annotators.fake_weights", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder to write the twin into (it becomes HF_HOME=OUT/hf, MOAI_MODELS=OUT)")
    parser.add_argument("--only", default=",".join(MODELS), help=f"comma-separated subset of {MODELS}")
    args = parser.parse_args(argv)
    models = tuple(m.strip() for m in args.only.split(",") if m.strip())
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        print(f"error: unknown models {unknown}; choose from {MODELS}", file=sys.stderr)
        return 2
    for name, folder in write_twin(args.out, models).items():
        print(f"{name}\t{folder}")
    out = Path(args.out).absolute()
    print(f"use it with: HF_HOME={out / 'hf'} MOAI_MODELS={out} python -m pipeline run ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Annotator throughput: ours (batched, OWLv2 text queries encoded once) vs the MoAI-style loop.

The MoAI-style loop is what the published code does: one image at a time, and for OWLv2 the
1,847 text queries re-encoded with every image (`model(input_ids=..., pixel_values=...)`).
Both run the same random-weight model in the same process; ratios are printed side by side.

    .venv/bin/python bench/bench_annotators.py                       # tiny models, CPU, ~1 min
    .venv/bin/python bench/bench_annotators.py --profile moderate --only owod --images 4
    .venv/bin/python bench/bench_annotators.py --profile full --device cuda --dtype bfloat16 --images 64

Profiles: tiny (tiny_config models), moderate (OWLv2 with the real-size text tower, ViT-B/16 at
384 px; Swin-T Mask2Former; YOLOv8s-worldv2 at 640), full (the published sizes, as the `moai`
profile's twin in annotators.fake_weights writes them: Mask2Former Swin-B at 384, OWLv2 B/16 at
960; YOLOv8s-worldv2 + CLIP B/32 text at 640; for a GPU).
Weights are random: the timings are the point, not the outputs.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def squashed_images(n: int, size: int) -> np.ndarray:
    """ultralytics' two photos, squashed; where ultralytics is not installed (a bare GPU machine),
    two fixed smooth pictures of the same size (timings do not depend on content)."""
    from PIL import Image
    try:
        import ultralytics
        assets = Path(ultralytics.__file__).parent / "assets"
        photos = [np.asarray(Image.open(assets / name).convert("RGB").resize((size, size)))
                  for name in ("bus.jpg", "zidane.jpg")]
    except ImportError:
        y, x = np.mgrid[0:size, 0:size] / size
        photos = [(np.stack([x, y, x * y], -1) * 255).astype(np.uint8),
                  (np.stack([1 - x, y * y, 1 - y], -1) * 255).astype(np.uint8)]
    return np.stack([photos[i % 2] for i in range(n)])  # (n, size, size, 3)


def timed(variants: list[tuple], device: str, repeats: int) -> list[float]:
    """Best images/s of each (fn, images) over `repeats` rounds; variants alternate within a round
    so load on a shared machine hits all of them alike. One warm-up call each first."""
    import torch

    def once(fn, images) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(images)
        if device == "cuda":
            torch.cuda.synchronize()
        return len(images) / (time.perf_counter() - start)
    for fn, images in variants:
        fn(images[:2])
    best = [0.0] * len(variants)
    for _ in range(repeats):
        for i, (fn, images) in enumerate(variants):
            best[i] = max(best[i], once(fn, images))
    return best


# ---- models per profile -------------------------------------------------------------------------

def save_owlv2(folder: Path, profile: str) -> Path:
    """full: the published OWLv2 B/16 at 960 px (annotators.fake_weights); moderate: the same at 384 px."""
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor
    from annotators.clip_text import build_clip_tokenizer
    from annotators.fake_weights import write_owlv2
    if profile == "full":
        return write_owlv2(folder)
    if (folder / "model.safetensors").is_file():
        return folder
    torch.manual_seed(0)
    text = {"max_position_embeddings": 16}  # real size: 512 wide, 12 layers, 8 heads
    vision = {"image_size": 384, "patch_size": 16}  # ViT-B/16
    Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision)).save_pretrained(folder)
    tokenizer = build_clip_tokenizer()
    tokenizer.model_max_length = 16
    Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 384, "width": 384}),
                   tokenizer=tokenizer).save_pretrained(folder)
    return folder


def save_mask2former(folder: Path, profile: str) -> Path:
    """full: the published Swin-B COCO panoptic (annotators.fake_weights); moderate: Swin-T."""
    import torch
    from transformers import (Mask2FormerConfig, Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor,
                              SwinConfig)
    from annotators.fake_weights import write_mask2former
    if profile == "full":
        return write_mask2former(folder)
    if (folder / "model.safetensors").is_file():
        return folder
    torch.manual_seed(0)
    backbone = SwinConfig(image_size=384, window_size=12, out_features=["stage1", "stage2", "stage3", "stage4"],
                          embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24])  # Swin-T
    labels = {i: f"class{i}" for i in range(133)}
    config = Mask2FormerConfig(backbone_config=backbone, num_labels=133, id2label=labels, num_queries=100,
                               use_pretrained_backbone=False)
    Mask2FormerForUniversalSegmentation(config).save_pretrained(folder)
    Mask2FormerImageProcessor(size={"height": 384, "width": 384}).save_pretrained(folder)
    return folder


def save_yolo_world(folder: Path) -> dict:
    import torch
    import ultralytics
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection
    from ultralytics import YOLOWorld
    from annotators.clip_text import build_clip_tokenizer
    text = folder / "clip-b32-text"
    if not (folder / "model.safetensors").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        arch = folder / "yolov8s-worldv2.yaml"
        arch.write_text((Path(ultralytics.__file__).parent / "cfg/models/v8/yolov8-worldv2.yaml").read_text())
        torch.manual_seed(0)
        model = YOLOWorld(str(arch), verbose=False).model
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
        CLIPTextModelWithProjection(CLIPTextConfig(projection_dim=512)).save_pretrained(text)  # B/32 text tower
        build_clip_tokenizer().save_pretrained(text)
    return {"model": str(folder), "text_model": str(text), "imgsz": 640}


def options(kind: str, profile: str, workdir: Path) -> dict:
    from annotators import registry
    if profile == "tiny":
        return registry.tiny_config(kind, workdir)
    if kind == "owod":
        return {"model": str(save_owlv2(workdir / f"owlv2-{profile}", profile))}
    if kind == "panoptic":
        return {"model": str(save_mask2former(workdir / f"mask2former-{profile}", profile))}
    return save_yolo_world(workdir / "yolo-world-s")


# ---- the MoAI-style loops -----------------------------------------------------------------------

def owlv2_published_loop(annotator):
    """Per image: tokenize and encode every query again, full model forward, same post-processing."""
    import torch
    names = list(annotator.vocabulary.names)

    def run(images):
        for image in images:
            inputs = annotator.processor(text=names, images=[image], return_tensors="pt").to(annotator.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(annotator.model.dtype)
            with torch.inference_mode():
                outputs = annotator.model(**inputs)
            outputs.logits, outputs.pred_boxes = outputs.logits.float(), outputs.pred_boxes.float()
            annotator.postprocess(outputs, [image.shape[:2]])
    return run


def per_image_loop(annotator):
    def run(images):
        for i in range(len(images)):
            annotator(images[i:i + 1])
    return run


def bench(kind: str, args, workdir: Path, images: np.ndarray) -> list[tuple]:
    from annotators import registry
    opts = {**options(kind, args.profile, workdir), "device": args.device, "dtype": args.dtype}
    if kind == "owod":
        opts["vocabulary"] = ("moai:owlv2",)  # MoAI's 1,847 queries, shipped with the project
    if kind == "owod_yolo" and args.dtype == "bfloat16":
        opts["dtype"] = "float16"  # ultralytics runs fp16, not bf16
    annotator = registry.build(kind, opts)
    loop = owlv2_published_loop(annotator) if kind == "owod" else per_image_loop(annotator)
    moai_images = images[:max(1, min(len(images), args.moai_images))]

    def batched(batch_size):
        def run(batch):
            annotator.config = replace(annotator.config, batch_size=batch_size)
            annotator(batch)
        return run
    variants = [(loop, moai_images)] + [(batched(b), images) for b in args.batch_sizes]
    baseline, *ours = timed(variants, annotator.device, args.repeats)
    rows = [(kind, "MoAI-style loop (batch 1" + (", queries re-encoded" if kind == "owod" else "") + ")",
             baseline, 1.0)]
    rows += [(kind, f"ours, batch {b}", ips, ips / baseline) for b, ips in zip(args.batch_sizes, ours)]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=("tiny", "moderate", "full"), default="tiny")
    parser.add_argument("--only", nargs="*", default=["panoptic", "owod", "owod_yolo"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--moai-images", type=int, default=8, help="images for the (slow) MoAI-style loop")
    parser.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; each variant's best counts")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/moai-bench-annotators"))
    args = parser.parse_args(argv)
    import torch
    from annotators.base import set_offline
    set_offline()
    images = squashed_images(args.images, 490)
    rows = []
    for kind in args.only:
        rows += bench(kind, args, args.workdir / args.profile, images)
    print(f"\nprofile={args.profile} device={args.device} dtype={args.dtype} images={args.images} "
          f"(MoAI-style loop on {min(args.images, args.moai_images)}) threads={torch.get_num_threads()}")
    print(f"{'annotator':<10} {'variant':<44} {'images/s':>10} {'vs MoAI loop':>13}")
    for kind, variant, ips, ratio in rows:
        print(f"{kind:<10} {variant:<44} {ips:>10.3g} {ratio:>12.2f}x")


if __name__ == "__main__":
    main()

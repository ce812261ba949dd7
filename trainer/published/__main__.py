"""`python -m trainer.published convert SRC OUT` and `python -m trainer.published dryrun` (or `trainer published ...`).

    python -m trainer.published convert checkpoints/internlm-xcomposer2-vl-7b checkpoints/xcomposer2-backbone
    python -m trainer.published convert checkpoints/MoAI-7B checkpoints/moai-7b-ours
    python -m trainer.published dryrun     # 7B on the meta device: parameters per part, checked against the layout

`convert` recognizes which of the two published folders it was given (MoAI-7B holds the Compressor).
"""
from __future__ import annotations

import argparse
import sys


def dryrun() -> int:
    """Build MoAI-7B on the meta device, count parameters per part (frozen / trainable per stage) and
    check every tensor against the published checkpoint's layout (docs/published.md §1)."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from trainer.model import MoAIConfig, MoAIModel
    from trainer.model.internlm2 import InternLM2PLoRAConfig, InternLM2PLoRAForCausalLM
    from trainer.model.tiny import build_tokenizer
    from trainer.model.vision import interpolate_position_grid
    from trainer.published.convert import lm_state, moai_state
    from trainer.published.layout import PublishedSizes, published_shapes

    sizes = PublishedSizes()
    with torch.device("meta"):
        lm = InternLM2PLoRAForCausalLM(InternLM2PLoRAConfig(num_embeddings=sizes.num_embeddings))
        vision = CLIPVisionModel(CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                                  num_attention_heads=16, image_size=336, patch_size=14))
        interpolate_position_grid(vision, 490)
        model = MoAIModel(MoAIConfig(lm="internlm2-plora-7b", vision="clip-vit-large-patch14-336"), lm, vision,
                          build_tokenizer())
    published = {k: torch.empty(shape, device="meta") for k, shape in published_shapes(sizes).items()}
    problems = []
    for name, ours, theirs in (("LM", lm.state_dict(), lm_state(published, sizes)),
                               ("MoAI", model.trainable_state_dict(), moai_state(published, sizes))):
        for key in sorted(set(ours) | set(theirs)):
            a, b = ours.get(key), theirs.get(key)
            if a is None or b is None or a.shape != b.shape:
                problems.append(f"{name} {key}: ours {None if a is None else tuple(a.shape)}, "
                                f"published {None if b is None else tuple(b.shape)}")
    position_table = tuple(vision.embeddings.position_embedding.weight.shape)
    if position_table != (1226, 1024):
        problems.append(f"CLIP position table {position_table}, published (1226, 1024)")

    def count(params):
        return sum(p.numel() for p in params)

    plora = [p for n, p in lm.named_parameters() if ".lora_" in n]
    parts = {"LM main weights": count(p for n, p in lm.named_parameters() if ".lora_" not in n),
             "LM PLoRA (image path)": count(plora), "CLIP vision": count(vision.parameters()),
             "connector": count(model.connector.parameters()), "Compressor": count(model.compressor.parameters()),
             "Mixer experts": count(p for n, p in model.mixers.named_parameters() if "_gate." not in n),
             "Mixer gates": count(p for n, p in model.mixers.named_parameters() if "_gate." in n)}
    trainable = {}
    for stage in (1, 2):
        model.set_stage(stage)
        trainable[stage] = count(p for p in model.parameters() if p.requires_grad)
    total = count(model.parameters())
    print(f"MoAI-7B on the meta device (InternLM2-7B + PLoRA r={sizes.plora_rank}, CLIP ViT-L/14 at 490 px)")
    for name, n in parts.items():
        stage1 = "trained" if name in ("connector", "Compressor", "Mixer experts") else "frozen"
        stage2 = "trained" if stage1 == "trained" or name == "Mixer gates" else "frozen"
        print(f"  {name:<24} {n:>15,}   stage 1 {stage1:<8} stage 2 {stage2}")
    print(f"  {'total':<24} {total:>15,}")
    print(f"  trainable: stage 1 {trainable[1]:,}, stage 2 {trainable[2]:,}; frozen: stage 1 "
          f"{total - trainable[1]:,}, stage 2 {total - trainable[2]:,}")
    if problems:
        print(f"{len(problems)} tensors disagree with the published layout:", *problems[:20], sep="\n  ")
        return 1
    print(f"every LM and MoAI tensor matches the published layout ({len(published):,} published keys)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.published", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="a published XComposer2-VL or MoAI-7B folder -> ours")
    convert.add_argument("src", help="the published folder (config.json + *.safetensors or *.bin)")
    convert.add_argument("out", help="a new folder")
    convert.add_argument("--vision", help="a local CLIP ViT-L/14-336 folder (when SRC holds no vit.* tensors)")
    convert.add_argument("--dtype", default="bfloat16", help="MoAIConfig.torch_dtype written for MoAI-7B")
    convert.add_argument("--expert-heads", type=int, default=4, help="not recorded in the weights (published: 4)")
    convert.add_argument("--compressor-heads", type=int, default=4, help="not recorded in the weights (published: 4)")
    convert.add_argument("--plora-alpha", type=float, help="not recorded in the weights (default: = rank)")
    convert.add_argument("--clip-heads", type=int, help="not recorded in the weights (default: width / 64)")
    commands.add_parser("dryrun", help="MoAI-7B on the meta device: parameter counts, layout check")
    args = parser.parse_args(argv)
    if args.command == "dryrun":
        return dryrun()
    from trainer.published.convert import convert as run_convert

    try:
        summary = run_convert(args.src, args.out, args.vision, args.dtype, args.expert_heads, args.compressor_heads,
                              args.plora_alpha, args.clip_heads)
    except (ValueError, FileNotFoundError) as err:
        print(f"trainer.published convert: error: {err}", file=sys.stderr)
        return 2
    s = summary["sizes"]
    print(f"{summary['kind']}: d {s.dim}, {s.layers} layers, {s.heads}/{s.kv_heads} heads, PLoRA r {s.plora_rank}"
          + (f", Mixer layers {list(s.mixer_layers)}" if s.moai else "") + f" -> {args.out}")
    if summary["remote_tokenizer"]:
        print("the tokenizer ships as remote code: loading it needs trust_remote_code and the sentencepiece "
              "package (the LM itself loads natively)")
    if s.moai:
        print(f"load with MoAIModel.from_pretrained({args.out!r}) (compat='moai' reproduces the published numbers)")
    else:
        print(f"train from it: model.lm = {summary['lm']}, model.vision = {summary['vision']}, "
              f"model.connector_init = {args.out}/vision_proj.safetensors (trainer/recipes/moai_7b.yaml)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

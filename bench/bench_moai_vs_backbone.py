"""MoAI's training step vs the same backbone without Compressor and Mixer, on the same batch, side by side.

    python bench/bench_moai_vs_backbone.py                              # tiny random backbones, CPU
    python bench/bench_moai_vs_backbone.py --size 7b --device cuda      # 7B-shaped random init, one GPU
    python bench/bench_moai_vs_backbone.py --size 7b --dry-run          # meta device: parameters + planned FLOPs

Variants, all on one synthetic batch (random token ids, one <image> per row, random pixels):
  bare     LLaVA-style: frozen CLIP on the photo -> trainable connector -> spliced into the frozen LM
  stage1   MoAI stage 1: + CLIP on the PS map, Compressor over [aux text ; PS tokens], one drawn expert per side
  stage2   MoAI stage 2: + the gates, all three experts per side
Each step is forward + backward + grad clip + AdamW step over the variant's trainable weights, with
the recipe's settings (LM gradient checkpointing; on CUDA bf16 backbones, fp32 trainable weights, bf16 autocast).

Memory: CUDA reports torch.cuda.max_memory_allocated over the variant's steps (weights included).
On CPU each variant runs in its own process and reports its peak RSS (ru_maxrss) minus the RSS
just before its first step, i.e. what the steps themselves added (activations, grads, AdamW state).

FLOPs (model FLOPs, per step; see planned_flops): frozen matmuls count 2*N*tokens forward, and the
frozen LM 2*N*tokens more in backward (activation gradients only, no weight gradients); trainable
parts count 6*N*tokens; attention scores/values count 4*S*S*width forward (2*S*S*width for the causal
LM), backward twice that. MFU excludes the recomputed forward of gradient checkpointing; HFU includes it.
Random weights, built locally; nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = ("bare", "stage1", "stage2")
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}  # dense bf16, no sparsity
SIZES = {  # batch, text tokens per row (incl. the <image> token), prompt tokens, aux text tokens
    "tiny": dict(batch_size=2, text_len=96, prompt_len=32, aux_len=32),
    "7b": dict(batch_size=1, text_len=1500, prompt_len=500, aux_len=300),
}


def build_7b_shaped(device: str):
    """MoAI-7B's shapes with random weights, created directly on `device` (meta = shapes only)."""
    import torch
    from transformers import AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModel, LlamaConfig

    from trainer.model import MoAIConfig, MoAIModel
    from trainer.model.tiny import build_tokenizer

    # InternLM2-7B's shapes as a native Llama (same layer layout, no remote code to run).
    lm_config = LlamaConfig(vocab_size=92_544, hidden_size=4096, intermediate_size=14_336, num_hidden_layers=32,
                            num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32_768,
                            rms_norm_eps=1e-5, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                            tie_word_embeddings=False)
    # CLIP ViT-L/14 built at 490 px directly (35 x 35 = 1,225 patches): nothing to interpolate.
    vision_config = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                     num_attention_heads=16, image_size=490, patch_size=14, projection_dim=768)
    dtype = torch.bfloat16 if device != "cpu" else torch.float32
    with torch.device(device):
        lm = AutoModelForCausalLM.from_config(lm_config, dtype=dtype, attn_implementation="sdpa")
        vision = CLIPVisionModel(vision_config).to(dtype)
    vision.requires_grad_(False).eval()
    config = MoAIConfig(lm="random:llama-7b-shaped", vision="random:clip-vit-l-14-490", mixer_layers=(7, 15, 23, 31),
                        torch_dtype="bfloat16" if dtype == torch.bfloat16 else "float32")
    return MoAIModel(config, lm, vision, build_tokenizer())


def build_tiny(backbones: Path):
    from trainer.model import MoAIModel
    from trainer.model.tiny import tiny_config

    return MoAIModel.from_config(tiny_config(backbones))


def matmul_params(module) -> int:
    """Weights of the Linear and Conv layers (what costs FLOPs per token), not embeddings or norms."""
    from torch import nn

    return sum(m.weight.numel() for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))


def shapes_of(model, batch_size: int, text_len: int, prompt_len: int, aux_len: int) -> dict:
    lm_cfg = model.lm.config.get_text_config()
    vision_cfg = model.vision.config
    image = model.num_image_tokens
    return dict(B=batch_size, S=text_len - 1 + image, I=image, L=prompt_len - 1, A=aux_len,
                lm_layers=lm_cfg.num_hidden_layers, d=lm_cfg.hidden_size,
                attn_width=lm_cfg.num_attention_heads * getattr(lm_cfg, "head_dim", lm_cfg.hidden_size
                                                                 // lm_cfg.num_attention_heads),
                lm_matmul=matmul_params(model.lm), lm_head=model.lm.get_output_embeddings().weight.numel(),
                vision_matmul=matmul_params(model.vision),
                vision_layers=vision_cfg.num_hidden_layers, vision_width=vision_cfg.hidden_size,
                connector=matmul_params(model.connector), latents=model.config.num_latents,
                compressor_inner=model.config.compressor_heads * model.config.compressor_head_dim,
                compressor_depth=model.config.compressor_depth, ff_mult=model.config.ff_mult,
                rank=model.config.expert_rank, mixers=len(model.mixer_layers))


def planned_flops(sh: dict, variant: str) -> dict:
    """Model FLOPs of one training step (no recompute) and the recompute gradient checkpointing adds."""
    B, S, I, L, A, N, d = sh["B"], sh["S"], sh["I"], sh["L"], sh["A"], sh["latents"], sh["d"]
    images = 1 if variant == "bare" else 2  # MoAI also runs CLIP + connector on the PS map
    vision_tokens = I + 1  # + CLS
    vision = images * B * (2 * sh["vision_matmul"] * vision_tokens
                           + 4 * sh["vision_layers"] * vision_tokens ** 2 * sh["vision_width"])
    lm_attention = 2 * sh["lm_layers"] * S ** 2 * sh["attn_width"]  # causal: half of 4 * S * S * width
    lm_forward = B * (2 * sh["lm_matmul"] * S + lm_attention)
    lm_backward = B * (2 * sh["lm_matmul"] * S + 4 * sh["lm_layers"] * S ** 2 * sh["attn_width"])
    trainable_forward = images * B * 2 * sh["connector"] * I
    if variant != "bare":
        inner, media = sh["compressor_inner"], A + I + N
        per_layer = (2 * (2 * inner * d) * media + 2 * (2 * inner * d + 2 * d * d * sh["ff_mult"]) * N
                     + 4 * N * media * inner)
        trainable_forward += B * sh["compressor_depth"] * per_layer

        def expert(q: int, k: int) -> int:  # q, o on the queries, k, v on the context; rank-r pairs
            return 2 * (2 * d * sh["rank"]) * 2 * (q + k) + 4 * q * k * d

        image_side = [expert(I, N), expert(I, L), expert(I, I)]
        language_side = [expert(L, N), expert(L, I), expert(L, L)]
        if variant == "stage1":  # one expert per side, drawn uniformly: the expected cost
            mixer = sum(image_side) / 3 + sum(language_side) / 3
        else:
            mixer = sum(image_side) + sum(language_side) + 2 * d * 3 * (I + L)  # + gates
        trainable_forward += B * sh["mixers"] * mixer
    model = vision + lm_forward + lm_backward + 3 * trainable_forward
    recompute = B * (2 * (sh["lm_matmul"] - sh["lm_head"]) * S + lm_attention)  # decoder layers only
    return {"model": model, "recompute": recompute, "tokens": B * S}


def synthetic_batch(model, batch_size: int, text_len: int, prompt_len: int, aux_len: int, device, seed: int = 0):
    import torch

    if not 2 <= prompt_len < text_len:
        raise ValueError(f"need 2 <= prompt_len < text_len, got {prompt_len}, {text_len}")
    g = torch.Generator().manual_seed(seed)
    vocab = model.lm.config.get_text_config().vocab_size
    special = 4  # ids below are pad/bos/eos/<image> in the tiny tokenizer
    input_ids = torch.randint(special, vocab, (batch_size, text_len), generator=g)
    input_ids[:, 1] = model.image_token_id  # right after BOS, as the chat template puts it
    labels = input_ids.clone()
    labels[:, :prompt_len] = -100  # the answer is everything after the prompt
    size = model.config.image_size
    batch = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels,
                 aux_input_ids=torch.randint(special, vocab, (batch_size, aux_len), generator=g),
                 aux_attention_mask=torch.ones(batch_size, aux_len, dtype=torch.long),
                 pixel_values=torch.randn(batch_size, 3, size, size, generator=g),
                 ps_pixel_values=torch.randn(batch_size, 3, size, size, generator=g))
    return {k: v.to(device) for k, v in batch.items()}


def bare_loss(baseline, batch: dict):
    """The same LM sequence without Compressor and Mixer: CLIP(photo) -> connector -> spliced -> LM.
    `baseline` is `model.without_mixers()`: it ignores the aux text and never runs CLIP on the PS map."""
    return baseline(**batch).loss


def prepare(model, device: str):
    """The recipe's training settings: LM gradient checkpointing, fp32 trainable weights, train mode."""
    if hasattr(model.lm, "activation_checkpointing_enable"):  # as trainer/train.py does
        model.lm.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for part in (model.connector, model.compressor, model.mixers):
        part.float()
    return model.to(device).train()


def run_variant(model, batch: dict, variant: str, steps: int, warmup: int = 1, count_flops: bool = False) -> dict:
    """Time `warmup + steps` optimizer steps of one variant; median step time over the timed steps.
    count_flops: one more, untimed step under torch's FlopCounterMode (what ran, recompute included)."""
    import contextlib

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    cuda = batch["input_ids"].is_cuda
    if variant == "bare":
        model.requires_grad_(False)
        baseline = model.without_mixers()  # shares the LM, CLIP and connector; trains the connector only
        baseline.set_stage(1)
    else:
        model.set_stage(int(variant[-1]))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    rss_before = _rss_kib()
    times, losses = [], []
    counter = FlopCounterMode(display=False)
    for step in range(warmup + steps + count_flops):
        counting = step == warmup + steps
        started = time.perf_counter()
        with counter if counting else contextlib.nullcontext():
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                if variant == "bare":
                    loss = bare_loss(baseline, batch)
                else:
                    loss = model(**batch, generator=torch.Generator().manual_seed(step)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if not counting and step >= warmup:
            times.append(time.perf_counter() - started)
        losses.append(loss.detach().item())
    out = {"variant": variant, "seconds": statistics.median(times), "losses": losses,
           "trainable": sum(p.numel() for p in params)}
    if count_flops:
        out["counted"] = counter.get_total_flops()
    if cuda:
        out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        # the kernel's high-water mark and /proc's current RSS are sampled differently and can
        # disagree by a few pages; growth below zero means "none"
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        out["step_rss_mib"] = max(grown, 0) / 1024
    del optimizer
    return out


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:  # resident pages
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def peak_tflops(device: str, override: float | None) -> float | None:
    if override:
        return override
    if device != "cuda":
        return None
    import torch
    name = torch.cuda.get_device_name()
    return next((tflops for key, tflops in PEAK_TFLOPS.items() if key in name), None)


def build(size: str, device: str, backbones: Path | None):
    if size == "7b":
        return build_7b_shaped(device)
    return build_tiny(backbones or Path(tempfile.mkdtemp(prefix="bench_moai_")))


def dry_run(size: str, backbones: Path | None = None) -> dict:
    """Parameter counts and planned FLOPs per variant without running a step. The 7B shapes are built on
    the meta device (no memory, no compute); the tiny model is loaded for real (it is a few MB)."""
    model = build(size, "meta" if size == "7b" else "cpu", backbones)
    shapes = shapes_of(model, **SIZES[size])
    moai_own = sum(p.numel() for p in (*model.connector.parameters(), *model.compressor.parameters(),
                                       *model.mixers.parameters()))
    report = {"size": size, "shapes": shapes,
              "params": {"lm": sum(p.numel() for p in model.lm.parameters()),
                         "vision": sum(p.numel() for p in model.vision.parameters()),
                         "connector": sum(p.numel() for p in model.connector.parameters()),
                         "compressor": sum(p.numel() for p in model.compressor.parameters()),
                         "mixers": sum(p.numel() for p in model.mixers.parameters())},
              "flops": {v: planned_flops(shapes, v) for v in VARIANTS}}
    report["params"]["bare_total"] = report["params"]["lm"] + report["params"]["vision"] + report["params"]["connector"]
    report["params"]["moai_total"] = report["params"]["lm"] + report["params"]["vision"] + moai_own
    return report


def measure(size: str, device: str, variants=VARIANTS, steps: int = 3, warmup: int = 1,
            backbones: Path | None = None, model=None, count_flops: bool = False) -> list[dict]:
    """Run the variants in this process on one shared model and batch; adds planned FLOPs to each."""
    import torch

    torch.manual_seed(0)
    model = prepare(model if model is not None else build(size, device, backbones), device)
    batch = synthetic_batch(model, **SIZES[size], device=device)
    shapes = shapes_of(model, **SIZES[size])
    results = []
    for variant in variants:
        result = run_variant(model, batch, variant, steps, warmup, count_flops)
        results.append({**result, **planned_flops(shapes, variant)})
    return results


def measure_isolated(args) -> list[dict]:
    """One process per variant, so each one's peak RSS is its own (CPU has no allocator peak counter)."""
    results = []
    for variant in VARIANTS:
        cmd = [sys.executable, __file__, "--size", args.size, "--device", args.device, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--backbones", str(args.backbones), "--only", variant]
        cmd += ["--count-flops"] if args.count_flops else []
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def print_report(results: list[dict], args, peak: float | None) -> None:
    import torch

    by = {r["variant"]: r for r in results}
    base = by["bare"]
    print(f"\nbench_moai_vs_backbone: {args.size}, batch {SIZES[args.size]['batch_size']} x {base['tokens'] // SIZES[args.size]['batch_size']}"
          f" LM tokens, {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else f", {torch.get_num_threads()} threads")
          + f", median of {args.steps} steps after {args.warmup} warm-up")
    print(f"{'':26}" + "".join(f"{v:>12}" for v in by) + "   MoAI/bare (stage1, stage2)")
    rows = [("step time (s)", "seconds", "{:12.3f}"), ("LM tokens/s", None, "{:12.0f}"),
            ("trainable params (M)", None, "{:12.2f}"), ("model TFLOP/step", None, "{:12.4f}")]
    memory_key = "peak_gib" if args.device == "cuda" else "step_rss_mib"
    rows.append(("peak alloc (GiB)" if args.device == "cuda" else "step peak RSS (MiB)", memory_key, "{:12.2f}"))
    values = {
        "step time (s)": lambda r: r["seconds"], "LM tokens/s": lambda r: r["tokens"] / r["seconds"],
        "trainable params (M)": lambda r: r["trainable"] / 1e6, "model TFLOP/step": lambda r: r["model"] / 1e12,
        rows[-1][0]: lambda r: r[memory_key],
    }
    if all("counted" in r for r in results):
        values["counted TFLOP/step"] = lambda r: r["counted"] / 1e12
        values["planned + recompute"] = lambda r: (r["model"] + r["recompute"]) / 1e12
        rows += [("counted TFLOP/step", None, "{:12.4f}"), ("planned + recompute", None, "{:12.4f}")]
    if peak:
        values["MFU (%)"] = lambda r: 100 * r["model"] / r["seconds"] / (peak * 1e12)
        values["HFU (%, + recompute)"] = lambda r: 100 * (r["model"] + r["recompute"]) / r["seconds"] / (peak * 1e12)
        rows += [("MFU (%)", None, "{:12.1f}"), ("HFU (%, + recompute)", None, "{:12.1f}")]
    else:
        values["achieved GFLOP/s"] = lambda r: r["model"] / r["seconds"] / 1e9
        rows.append(("achieved GFLOP/s", None, "{:12.1f}"))
    for name, _, fmt in rows:
        cells = [values[name](by[v]) for v in by]
        ratios = [c / cells[0] if cells[0] else float("nan") for c in cells[1:]]
        print(f"{name:26}" + "".join(fmt.format(c) for c in cells) + "   " + ", ".join(f"{x:.2f}x" for x in ratios))
    print("losses (first, last): " + ", ".join(f"{v} {r['losses'][0]:.3f}/{r['losses'][-1]:.3f}" for v, r in by.items()))
    if peak:
        print(f"MFU = model FLOPs / step time / {peak:.0f} TFLOP/s (dense bf16 peak); see planned_flops")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=tuple(SIZES), default="tiny")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--backbones", type=Path, default=None, help="where the tiny backbones are built")
    parser.add_argument("--peak-tflops", type=float, default=None, help="for MFU; default from the GPU name")
    parser.add_argument("--dry-run", action="store_true",
                        help="no steps: parameter counts and planned FLOPs (7b: built on the meta device)")
    parser.add_argument("--count-flops", action="store_true",
                        help="one extra step per variant under torch's FlopCounterMode (cross-checks the formula; "
                             "CPU attention kernels are not counted by it)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--only", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.dry_run:
        report = dry_run(args.size, args.backbones)
        print(json.dumps(report, indent=1))
        return 0
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            print("bench_moai_vs_backbone: --device cuda but no CUDA device; nothing measured", file=sys.stderr)
            return 2
    if args.only:  # a child of measure_isolated: one JSON line
        result = measure(args.size, args.device, (args.only,), args.steps, args.warmup, args.backbones,
                         count_flops=args.count_flops)[0]
        print(json.dumps(result))
        return 0
    if args.device == "cpu":
        args.backbones = args.backbones or Path(tempfile.mkdtemp(prefix="bench_moai_"))
        results = measure_isolated(args)
    else:
        results = measure(args.size, args.device, VARIANTS, args.steps, args.warmup, args.backbones,
                          count_flops=args.count_flops)
    print_report(results, args, peak_tflops(args.device, args.peak_tflops))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Batched generation of MoAI on its own backbone (InternLM2 with PLoRA), random weights, batch 1 / 8 / 32.

    python bench/bench_generate.py                                   # tiny shapes, CPU: a smoke check
    python bench/bench_generate.py --size 7b --device cuda           # MoAI-7B's shapes in bf16, one GPU

Each row of the batch is what MoAI answers from: a prompt (BOS, system text, <image>, question) whose
<image> becomes 1,225 image tokens, and an aux input of text plus 1,225 PS-map tokens for the
Compressor. CLIP features are given (as from `trainer cache`), so the numbers are the LM side's.
Reported per batch size (medians of --repeats runs, each one N-token generate): prompt tokens/s
(merged prompt tokens, image tokens included, over the time to the end of the LM's first forward),
generated tokens/s (batch x (N - 1) new tokens over the time of the remaining forwards), and peak
memory (CUDA: max allocated, weights included; CPU: peak RSS of the process). The published code
runs batch 1 in 4/8 bit only; this is bf16, batched.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZES = {  # LM config overrides, text tokens per prompt, aux text tokens, new tokens
    "tiny": dict(lm=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=8, num_attention_heads=4,
                         num_key_value_heads=2, plora_rank=8, plora_alpha=8, vocab_size=260, num_embeddings=261),
                 vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
                 mixer_layers=(3, 7), prompt_len=64, aux_len=300, new_tokens=8),
    "7b": dict(lm=dict(num_embeddings=92545),  # InternLM2PLoRAConfig's defaults are the 7B ones
               vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
               mixer_layers=(7, 15, 23, 31), prompt_len=64, aux_len=300, new_tokens=64),
}


def build(size: str, device: str, dtype):
    """MoAIModel around a random-weight InternLM2 with PLoRA and CLIP tower, built directly on `device`."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from trainer.model import MoAIConfig, MoAIModel
    from trainer.model.internlm2 import InternLM2PLoRAConfig, InternLM2PLoRAForCausalLM
    from trainer.model.tiny import build_tokenizer

    spec = SIZES[size]
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # weights created in bf16 on the GPU: no fp32 copy of 8.9 B parameters
    try:
        with torch.device(device):
            lm = InternLM2PLoRAForCausalLM(InternLM2PLoRAConfig(**spec["lm"], pad_token_id=0, bos_token_id=1,
                                                                eos_token_id=2))
            vision = CLIPVisionModel(CLIPVisionConfig(**spec["vision"], image_size=336, patch_size=14))
            config = MoAIConfig(lm="random", vision="random", mixer_layers=spec["mixer_layers"],
                                torch_dtype=str(dtype).removeprefix("torch."))
            model = MoAIModel(config, lm, vision, build_tokenizer())
    finally:
        torch.set_default_dtype(default)
    return model.eval()


def make_batch(model, batch_size: int, prompt_len: int, aux_len: int, device: str, dtype):
    import torch

    g = torch.Generator().manual_seed(batch_size)
    vocab = model.lm.config.vocab_size
    ids = torch.randint(4, min(vocab, 260), (batch_size, prompt_len), generator=g)
    ids[:, 0] = model.tokenizer.bos_token_id
    ids[:, prompt_len // 2] = model.image_token_id
    dim = model.vision.config.hidden_size
    feats = lambda: torch.randn(batch_size, model.num_image_tokens, dim, generator=g).to(device, dtype)  # noqa: E731
    return dict(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device),
                aux_input_ids=torch.randint(4, 260, (batch_size, aux_len), generator=g).to(device),
                aux_attention_mask=torch.ones(batch_size, aux_len, dtype=torch.long).to(device),
                image_features=feats(), ps_features=feats())


def timed_generate(model, batch: dict, new_tokens: int, device: str) -> tuple[float, float, int]:
    """One greedy generate -> (prefill seconds, decode seconds, LM calls). Prefill runs from the call to
    the end of the LM's first forward (splicing, Compressor, Mixer and the prompt pass); decode from
    there to the end of the last forward (one forward per further token)."""
    import torch

    def now():
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter()

    ends = []
    hook = model.lm.register_forward_hook(lambda *_: ends.append(now()))
    try:
        start = now()
        model.generate(**batch, max_new_tokens=new_tokens)
    finally:
        hook.remove()
    return ends[0] - start, ends[-1] - ends[0], len(ends)


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--new-tokens", type=int, help="default: 8 (tiny), 64 (7b)")
    parser.add_argument("--repeats", type=int, default=3, help="timings are the median of this many runs")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    spec = SIZES[args.size]
    new_tokens = args.new_tokens or spec["new_tokens"]
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    model = build(args.size, args.device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"MoAI ({args.size}, {n_params:,} parameters, {dtype}) on {args.device}; prompt {spec['prompt_len']} "
          f"text tokens + 1,224 image tokens, aux {spec['aux_len']} + 1,225 PS tokens, {new_tokens} new tokens")
    results = []
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        batch = make_batch(model, batch_size, spec["prompt_len"], spec["aux_len"], args.device, dtype)
        merged = spec["prompt_len"] - 1 + model.num_image_tokens
        model.generate(**batch, max_new_tokens=2)  # warm-up (kernels, allocator)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        runs = [timed_generate(model, batch, new_tokens, args.device) for _ in range(args.repeats)]
        prefill_s = statistics.median(r[0] for r in runs)
        decode_s = statistics.median(r[1] for r in runs)
        steps = runs[-1][2]  # LM calls = generated tokens (fewer only if every row produced EOS)
        peak = (torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda")
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
        row = dict(batch=batch_size, prompt_tokens_per_s=batch_size * merged / prefill_s,
                   generated_tokens_per_s=batch_size * (steps - 1) / decode_s if steps > 1 else float("nan"),
                   prefill_s=prefill_s, decode_s=decode_s, steps=steps, peak_gib=peak)
        results.append(row)
        print(f"  batch {batch_size:>3}: prompt {row['prompt_tokens_per_s']:>10,.0f} tok/s   generated "
              f"{row['generated_tokens_per_s']:>8,.1f} tok/s   ({steps} steps; prefill {prefill_s:.2f} s, decode "
              f"{decode_s:.2f} s)   peak "
              f"{peak:.2f} GiB" + (" (RSS)" if not args.device.startswith("cuda") else ""), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(size=args.size, device=args.device, results=results), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

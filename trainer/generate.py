"""`trainer generate`: answer a question about an annotated image with a trained MoAI model.

    trainer generate --model runs/tiny/stage2/final --annotations demo/out --image bus.jpg \
        --question "What objects are in the image?"

The image is looked up in the annotations (its `text_aux` and `ps_map` are MoAI's auxiliary input);
the prompt uses the same markup the model was trained with (read from the checkpoint's recipe).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from schemas.schema import STATUS_OK


def answer_batch(model, items: list[dict], prompt, max_new_tokens: int,
                 features: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[str]:
    """Greedy answers to items {prompt, source, ps_map, text_aux} (`trainer evaluate run` batches
    them): prompts left-padded, auxiliary text right-padded, an empty one as one masked pad (as
    training's collate gives it). `features`: the items' cached (image, ps) CLIP features, each
    (B, N, Dv), instead of reading and encoding their pictures."""
    from trainer.data import generation_prompt, load_image, load_ps_ids
    tok, size = model.tokenizer, model.config.image_size
    device = next(model.parameters()).device
    ids = [generation_prompt(it["prompt"], tok, model.image_token_id, prompt) for it in items]
    auxes = [tok(it["text_aux"] or "", add_special_tokens=False)["input_ids"] for it in items]
    B, T, A = len(items), max(map(len, ids)), max(max(map(len, auxes)), 1)
    input_ids = torch.full((B, T), tok.pad_token_id, dtype=torch.long)        # (B, T), left-padded
    attention = torch.zeros((B, T), dtype=torch.long)
    aux = torch.full((B, A), tok.pad_token_id, dtype=torch.long)              # (B, A), right-padded
    aux_mask = torch.zeros((B, A), dtype=torch.long)
    for b, (x, a) in enumerate(zip(ids, auxes)):
        input_ids[b, T - len(x):], attention[b, T - len(x):] = torch.tensor(x), 1
        if a:
            aux[b, :len(a)], aux_mask[b, :len(a)] = torch.tensor(a), 1
    if features is not None:  # as training on a cache feeds them
        vision = {"image_features": features[0].to(device).float(), "ps_features": features[1].to(device).float()}
    else:
        images = torch.from_numpy(np.stack([load_image(it["source"], size) for it in items])).to(device)
        ps_ids = torch.from_numpy(np.stack([load_ps_ids(it["ps_map"], size) for it in items])).to(device)
        vision = {"pixel_values": model.image_pixel_values(images), "ps_pixel_values": model.ps_pixel_values(ps_ids)}
    with torch.inference_mode():
        out = model.generate(input_ids.to(device), attention.to(device), max_new_tokens=max_new_tokens,
                             aux_input_ids=aux.to(device), aux_attention_mask=aux_mask.to(device), **vision)
    return [tok.decode(row, skip_special_tokens=True).strip() for row in out]


def answer(model, question: str, source: str, ps_png: bytes, text_aux: str, prompt, max_new_tokens: int = 32) -> str:
    return answer_batch(model, [{"prompt": question, "source": source, "ps_map": ps_png, "text_aux": text_aux}],
                        prompt, max_new_tokens)[0]


def main(argv: list[str] | None = None) -> int:
    from schemas import read_annotations

    from .data import ANNOTATION_COLUMNS, PromptFormat, match_rows
    from .model import MoAIModel
    parser = argparse.ArgumentParser(prog="trainer generate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a `final` folder written by `trainer train`")
    parser.add_argument("--annotations", required=True, help="the pipeline's Parquet holding the image")
    parser.add_argument("--image", required=True, help="image_id (or the end of its source path)")
    parser.add_argument("--question", default="What objects are in the image?")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    table = read_annotations(args.annotations, columns=ANNOTATION_COLUMNS)  # data first, then the (big) model
    by_id, by_source = match_rows(table)
    row = by_id.get(args.image, by_source.get(args.image.lstrip("./")))
    if row is None:
        print(f"trainer generate: {args.image!r} is not in {args.annotations}", file=sys.stderr)
        return 2
    if table.column("status")[row].as_py() != STATUS_OK or table.column("ps_map")[row].as_py() is None:
        print(f"trainer generate: {args.image!r} has no usable annotation (status "
              f"{table.column('status')[row].as_py()!r}, ps_map present: "
              f"{table.column('ps_map')[row].as_py() is not None})", file=sys.stderr)
        return 2
    model = MoAIModel.from_pretrained(args.model).to(args.device).eval()
    state_file = Path(args.model) / "state.json"
    recipe = json.loads(state_file.read_text())["recipe"] if state_file.is_file() else {}
    prompt = PromptFormat.from_dict(recipe.get("data", {}).get("prompt"))
    print(answer(model, args.question, table.column("source")[row].as_py(), table.column("ps_map")[row].as_py(),
                 table.column("text_aux")[row].as_py(), prompt, args.max_new_tokens))
    return 0

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


def answer(model, question: str, source: str, ps_png: bytes, text_aux: str, prompt, max_new_tokens: int = 32) -> str:
    from .data import generation_prompt, load_image, load_ps_ids
    tok, size = model.tokenizer, model.config.image_size
    ids = torch.tensor([generation_prompt(question, tok, model.image_token_id, prompt)])
    aux_ids = tok(text_aux or "", add_special_tokens=False)["input_ids"]
    # no auxiliary text: one masked pad token, exactly what collate gives such a sample in training
    aux = torch.tensor([aux_ids or [tok.pad_token_id]])
    aux_mask = torch.tensor([[1] * len(aux_ids) or [0]])
    device = next(model.parameters()).device
    out = model.generate(
        ids.to(device), torch.ones_like(ids).to(device), max_new_tokens=max_new_tokens,
        aux_input_ids=aux.to(device), aux_attention_mask=aux_mask.to(device),
        pixel_values=model.image_pixel_values(torch.from_numpy(np.stack([load_image(source, size)])).to(device)),
        ps_pixel_values=model.ps_pixel_values(torch.from_numpy(np.stack([load_ps_ids(ps_png, size)])).to(device)))
    return tok.decode(out[0], skip_special_tokens=True).strip()


def main(argv: list[str] | None = None) -> int:
    from schemas import read_annotations

    from .data import ANNOTATION_COLUMNS, PromptFormat, _match_rows
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
    by_id, by_source = _match_rows(table)
    row = by_id.get(args.image, by_source.get(args.image.lstrip("./")))
    if row is None:
        print(f"trainer generate: {args.image!r} is not in {args.annotations}", file=sys.stderr)
        return 2
    if table.column("status")[row].as_py() != "ok" or table.column("ps_map")[row].as_py() is None:
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

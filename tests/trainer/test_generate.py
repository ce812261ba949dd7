"""`trainer generate` feeds the auxiliary text exactly as training does, an empty one included."""
import numpy as np
import torch

from schemas import encode_ps_map
from trainer.synthetic import render
from trainer.data import PromptFormat, collate, generation_prompt, load_image, load_ps_ids
from trainer.generate import answer
from trainer.recipe import build_model


def test_an_empty_aux_text_is_masked_as_in_training(tiny_root, tmp_path, one_thread):
    model = build_model({"tiny": str(tiny_root), "image_size": 112}).eval()
    image, segments = render("circle", "red")
    image.save(tmp_path / "photo.png")
    seen = []
    generate = model.generate

    def spy(*args, **kwargs):
        seen.append({k: kwargs[k] for k in ("aux_input_ids", "aux_attention_mask")})
        return generate(*args, **kwargs)
    model.generate = spy
    with torch.no_grad():
        empty = answer(model, "What is it?", str(tmp_path / "photo.png"), encode_ps_map(segments), "",
                       PromptFormat(), max_new_tokens=4)
    model.generate = generate
    pad = model.tokenizer.pad_token_id
    trained = collate([{"input_ids": torch.tensor([1]), "labels": torch.tensor([1]),
                        "aux_input_ids": torch.tensor([], dtype=torch.long)}], pad)
    assert torch.equal(seen[0]["aux_input_ids"].cpu(), trained["aux_input_ids"])
    assert torch.equal(seen[0]["aux_attention_mask"].cpu(), trained["aux_attention_mask"])
    assert int(seen[0]["aux_attention_mask"].sum()) == 0  # nothing of the pad is attended

    # a masked pad changes nothing: three masked pads give the same answer
    size = model.config.image_size
    ids = torch.tensor([generation_prompt("What is it?", model.tokenizer, model.image_token_id, PromptFormat())])
    pads = torch.tensor([[pad, pad, pad]])
    with torch.no_grad():
        out = model.generate(
            ids, torch.ones_like(ids), max_new_tokens=4, aux_input_ids=pads, aux_attention_mask=torch.zeros_like(pads),
            pixel_values=model.image_pixel_values(torch.from_numpy(np.stack([load_image(str(tmp_path / "photo.png"), size)]))),
            ps_pixel_values=model.ps_pixel_values(torch.from_numpy(np.stack([load_ps_ids(encode_ps_map(segments), size)]))))
    assert model.tokenizer.decode(out[0], skip_special_tokens=True).strip() == empty

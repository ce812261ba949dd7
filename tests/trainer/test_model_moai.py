"""MoAIModel on tiny random backbones: shapes, masks, no leak, batch equivalence, stages, generate, I/O."""
import pytest
import torch
from torch.testing import assert_close

from trainer.model import MoAIModel
from trainer.model.tiny import tiny_config

PROMPTS = ["USER: <image>\nWhat is on the table? ASSISTANT:", "USER: <image>\nColour? ASSISTANT:"]
ANSWERS = [" A red cup and a plate.", " Blue."]
AUX = ["The image includes bounding box coordinates and their objects: [0.10, 0.20, 0.50, 0.90] cup.", "  "]


pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture(scope="module")
def model(tiny_root):
    torch.manual_seed(0)
    return MoAIModel.from_config(tiny_config(tiny_root)).eval()


def image_features(model, rows, seed=0):
    dim = model.vision.config.hidden_size
    return torch.stack([torch.randn(model.num_image_tokens, dim, generator=torch.Generator().manual_seed(seed + r))
                        for r in rows])


def make_batch(model, rows=(0, 1), padding_side="right", answers=ANSWERS, aux=AUX):
    """Rows of prompt + answer with labels on the answer only, padded on `padding_side`; aux padded right."""
    tok = model.tokenizer
    seqs, labels = [], []
    for r in rows:
        prompt = [tok.bos_token_id] + tok(PROMPTS[r], add_special_tokens=False)["input_ids"]
        answer = tok(answers[r], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        seqs.append(prompt + answer)
        labels.append([-100] * len(prompt) + answer)
    width = max(map(len, seqs))

    def pad(row, value):
        fill = [value] * (width - len(row))
        return fill + row if padding_side == "left" else row + fill

    aux_ids = [tok(aux[r], add_special_tokens=False)["input_ids"] for r in rows]
    aux_width = max(map(len, aux_ids))
    return dict(
        input_ids=torch.tensor([pad(s, tok.pad_token_id) for s in seqs]),
        attention_mask=torch.tensor([pad([1] * len(s), 0) for s in seqs]),
        labels=torch.tensor([pad(l, -100) for l in labels]),
        aux_input_ids=torch.tensor([a + [tok.pad_token_id] * (aux_width - len(a)) for a in aux_ids]),
        aux_attention_mask=torch.tensor([[1] * len(a) + [0] * (aux_width - len(a)) for a in aux_ids]),
        image_features=image_features(model, rows), ps_features=image_features(model, rows, seed=100))


def run(model, batch, stage=2, seed=0):
    model.set_stage(stage)
    with torch.no_grad():
        return model(**batch, generator=torch.Generator().manual_seed(seed))


def first_answer(labels):
    return int((labels != -100).nonzero()[0])


def test_forward_shapes_labels_and_gate_weights(model):
    batch = make_batch(model)
    out = run(model, batch, stage=2)
    B, T = batch["input_ids"].shape
    assert out.logits.shape == (B, T - 1 + 1225, len(model.tokenizer))
    assert torch.isfinite(out.loss)
    for r in range(B):  # image tokens and prompt carry no label; answers keep theirs
        start = int((batch["input_ids"][r] == model.image_token_id).nonzero())
        assert (out.labels[r, start:start + 1225] == -100).all()
        assert (out.labels[r] != -100).sum() == (batch["labels"][r] != -100).sum()
    assert sorted(out.gate_weights) == [1, 3]
    prompt_language = [first_answer(batch["labels"][r]) - 1 for r in range(B)]  # minus the placeholder
    for gates in out.gate_weights.values():
        assert gates.image.shape == (B, 1225, 3)
        assert gates.language.shape == (B, max(prompt_language), 3)
        assert gates.language_mask.sum(1).tolist() == prompt_language
    assert out.loss.item() == pytest.approx(run(model, batch, stage=2).loss.item())  # stage 2 is deterministic


@pytest.mark.parametrize("stage", [1, 2])
def test_changing_answers_leaves_every_earlier_logit_unchanged(model, stage):
    batch = make_batch(model)
    other = make_batch(model, answers=[" Two green apples, yes.", " Pink."])
    assert other["input_ids"].shape == batch["input_ids"].shape and not torch.equal(other["input_ids"],
                                                                                     batch["input_ids"])
    out, out_other = run(model, batch, stage), run(model, other, stage)
    for r in range(2):
        cut = first_answer(out.labels[r])  # logits up to here predict the first answer token
        assert (batch["input_ids"][r, :cut - 1224] == other["input_ids"][r, :cut - 1224]).all()
        assert_close(out.logits[r, :cut], out_other.logits[r, :cut], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(out.logits[r, cut:], out_other.logits[r, cut:])
    if stage == 1:
        return  # a drawn pair may hold no cross-token language expert; stage 2 always mixes them all
    # Teeth: were the answers part of the Mixer's input (no labels), they would reach earlier logits.
    no_labels = {k: v for k, v in batch.items() if k != "labels"}
    no_labels_other = {k: v for k, v in other.items() if k != "labels"}
    cut = first_answer(out.labels[0])
    leaky, leaky_other = run(model, no_labels, stage), run(model, no_labels_other, stage)
    assert not torch.allclose(leaky.logits[0, :cut], leaky_other.logits[0, :cut], atol=1e-5)


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("stage", [1, 2])
def test_batch_of_two_equals_two_batches_of_one(model, padding_side, stage):
    both = run(model, make_batch(model, padding_side=padding_side), stage, seed=3)
    assert (both.attention_mask == 0).any()  # the rows really are padded
    for r in range(2):
        single = run(model, make_batch(model, rows=(r,)), stage, seed=3)
        real = both.attention_mask[r].bool()
        assert_close(both.logits[r, real], single.logits[0], atol=1e-4, rtol=1e-4)


def test_stage1_draws_one_expert_per_layer_seeded(model):
    batch = make_batch(model)
    a, b = run(model, batch, stage=1, seed=11), run(model, batch, stage=1, seed=11)
    assert_close(a.logits, b.logits, atol=0, rtol=0)

    def draws(out):
        return {layer: (int(g.image[0, 0].argmax()), int(g.language[0, 0].argmax()))
                for layer, g in out.gate_weights.items()}

    for gates in a.gate_weights.values():  # one expert for all image tokens, one for all language tokens
        assert (gates.image.sum(-1) == 1).all() and (gates.image == gates.image[:1, :1]).all()
        assert (gates.language == gates.language[:1, :1]).all()
    seed = next(s for s in range(12, 60) if draws(run(model, batch, stage=1, seed=s)) != draws(a))
    assert not torch.allclose(run(model, batch, stage=1, seed=seed).logits, a.logits)


def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_trainable_parameters_per_stage(model):
    model.set_stage(1)
    stage1 = trainable_names(model)
    assert stage1 and all(n.startswith(("connector.", "compressor.", "mixers.")) for n in stage1)
    assert "compressor.latents" in stage1
    assert not any("gate" in n for n in stage1)
    assert {n for n in stage1 if n.startswith("mixers.")} == {
        n for n, _ in model.named_parameters() if "_experts." in n}
    model.set_stage(2)
    stage2 = trainable_names(model)
    assert stage2 - stage1 == {f"mixers.{i}.{side}_gate.{w}" for i in (1, 3) for side in ("image", "language")
                               for w in ("weight", "bias")}
    assert not any(n.startswith(("lm.", "vision.")) for n in stage2)
    model.train()
    assert model.compressor.training and not model.vision.training
    model.eval()
    out = model(**make_batch(model))
    out.loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads == stage2  # stage 2 mixes every expert: each trainable weight gets a gradient
    model.zero_grad(set_to_none=True)


def test_mixer_rewrites_the_normed_attention_input_and_leaves_the_residual(model):
    layer = model.lm.model.layers[3]
    seen = {}
    hooks = [
        layer.register_forward_pre_hook(lambda m, a, k: seen.__setitem__("x", k.get("hidden_states", a and a[0])),
                                        with_kwargs=True),
        layer.self_attn.register_forward_pre_hook(lambda m, a, k: seen.__setitem__("attn_in", k["hidden_states"]),
                                                  with_kwargs=True),
        layer.self_attn.register_forward_hook(lambda m, a, out: seen.__setitem__("attn_out", out[0])),
        layer.post_attention_layernorm.register_forward_pre_hook(lambda m, a: seen.__setitem__("resid", a[0])),
    ]
    try:
        out = run(model, make_batch(model, rows=(0,)), stage=2)
    finally:
        for h in hooks:
            h.remove()
    normed = type(layer.input_layernorm).forward(layer.input_layernorm, seen["x"])  # the norm without the Mixer
    start = int((make_batch(model, rows=(0,))["input_ids"][0] == model.image_token_id).nonzero())
    cut = first_answer(out.labels[0])
    changed = (seen["attn_in"][0] - normed[0]).abs().amax(-1) > 1e-6  # (T',)
    assert changed[start:start + 1225].all() and changed[1:start].all()  # image and prompt language
    assert not changed[cut:].any()  # answer tokens skip the Mixer
    assert_close(seen["resid"], seen["x"] + seen["attn_out"])  # residual adds to the raw, unmixed input


def test_padded_aux_tokens_are_masked(model):
    batch = make_batch(model, rows=(0,))
    padded = dict(batch)
    junk = torch.full((1, 400), 200)  # one repeated token: weight enough to move the latents
    padded["aux_input_ids"] = torch.cat([batch["aux_input_ids"], junk], 1)
    padded["aux_attention_mask"] = torch.cat([batch["aux_attention_mask"], torch.zeros_like(junk)], 1)
    reference = run(model, batch).logits
    masked_gap = (run(model, padded).logits - reference).abs().max()
    unmasked = dict(padded, aux_attention_mask=torch.ones_like(padded["aux_attention_mask"]))
    unmasked_gap = (run(model, unmasked).logits - reference).abs().max()
    assert masked_gap < 1e-5 and unmasked_gap > 100 * masked_gap + 1e-5, (masked_gap, unmasked_gap)


def test_generate_is_greedy_cached_and_matches_teacher_forcing(model):
    model.set_stage(2)
    full = make_batch(model)
    cuts = [first_answer(full["labels"][r]) for r in range(2)]
    prompts = [{k: (v[r:r + 1, :cuts[r]] if k in ("input_ids", "attention_mask", "labels") else v[r:r + 1])
                for k, v in full.items()} for r in range(2)]
    width = max(cuts)
    batch = {k: torch.cat([p[k] for p in prompts]) for k in ("aux_input_ids", "aux_attention_mask",
                                                              "image_features", "ps_features")}
    batch["input_ids"] = torch.stack([torch.nn.functional.pad(p["input_ids"][0], (0, width - p["input_ids"].shape[1]),
                                                              value=model.tokenizer.pad_token_id) for p in prompts])
    batch["attention_mask"] = (torch.arange(width)[None] < torch.tensor(cuts)[:, None]).long()  # right-padded
    tokens = model.generate(**batch, max_new_tokens=6)
    assert tokens.shape[0] == 2 and 1 <= tokens.shape[1] <= 6
    assert torch.equal(tokens, model.generate(**batch, max_new_tokens=6))
    for r, prompt in enumerate(prompts):
        single = model.generate(**{k: v for k, v in prompt.items() if k != "labels"}, max_new_tokens=6)
        new = single[0]
        assert torch.equal(tokens[r, :len(new)], new)
        # Teacher forcing with the generated tokens as the answer reproduces them: training == inference.
        ids = torch.cat([prompt["input_ids"], new[None]], 1)
        labels = torch.cat([torch.full_like(prompt["input_ids"], -100), new[None]], 1)
        out = run(model, dict(prompt, input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels))
        start = first_answer(out.labels[0])
        assert torch.equal(out.logits[0, start - 1:-1].argmax(-1), new)


def test_save_pretrained_round_trip(model, tmp_path):
    from safetensors.torch import load_file

    model.set_stage(2)
    with torch.no_grad():
        for p in model.mixers.parameters():
            p.add_(0.01)  # differ from a fresh init
    model.save_pretrained(tmp_path / "ckpt")
    saved = load_file(tmp_path / "ckpt" / "moai.safetensors")
    assert set(saved) == set(model.trainable_state_dict())
    assert not any(k.startswith(("lm.", "vision.")) for k in saved)
    restored = MoAIModel.from_pretrained(tmp_path / "ckpt").eval()
    assert restored.stage == 2 and restored.config == model.config
    batch = make_batch(model)
    assert_close(run(restored, batch).logits, run(model, batch).logits)
    with pytest.raises(ValueError, match="missing"):
        restored.load_trainable_state_dict({k: v for k, v in saved.items() if "gate" not in k})


def test_pixel_paths(model):
    import numpy as np

    images = np.random.default_rng(0).integers(0, 256, (2, 60, 90, 3), dtype=np.uint8)
    pixels = model.image_pixel_values(images)
    assert pixels.shape == (2, 3, 490, 490)
    white = model.image_pixel_values(np.full((1, 10, 10, 3), 255, np.uint8))
    processor = model.preprocessor.processor
    mean, std = torch.tensor(processor.image_mean), torch.tensor(processor.image_std)
    assert_close(white[0, :, 5, 5], (1 - mean) / std, atol=1e-4, rtol=1e-4)
    ps = np.zeros((2, 490, 490), np.uint8)
    ps[:, :100] = 1  # segment 1 is VOC colour (128, 0, 0)
    ps_pixels = model.ps_pixel_values(torch.from_numpy(ps))
    assert_close(ps_pixels[0, :, 0, 0], (torch.tensor([128 / 255, 0, 0]) - mean) / std)
    assert_close(ps_pixels[0, :, 300, 0], -mean / std)
    quirk = model.preprocessor.__class__(model.config.vision, 490, "moai").ps_maps(ps)
    assert_close(quirk[0, :, 0, 0], (torch.tensor([128 / 255 / 255, 0, 0]) - mean) / std)  # nearly constant
    features = model.encode_vision(pixels)
    assert features.shape == (2, 1225, model.vision.config.hidden_size)
    batch = make_batch(model)
    batch.pop("image_features"), batch.pop("ps_features")
    via_pixels = run(model, dict(batch, pixel_values=pixels, ps_pixel_values=ps_pixels))
    via_features = run(model, dict(batch, image_features=features, ps_features=model.encode_vision(ps_pixels)))
    assert_close(via_pixels.logits, via_features.logits)
    with pytest.raises(ValueError, match="either image_features or image_pixel_values"):
        run(model, dict(batch, pixel_values=pixels, image_features=features))


def test_input_errors_are_actionable(model):
    batch = make_batch(model)
    two_images = batch["input_ids"].clone()
    two_images[0, -1] = model.image_token_id
    with pytest.raises(ValueError, match=r"exactly one image token .* rows hold \[2, 1\]"):
        run(model, dict(batch, input_ids=two_images))
    early_answer = batch["labels"].clone()
    early_answer[:, 1] = 5
    with pytest.raises(ValueError, match="image token must come before the first answer token"):
        run(model, dict(batch, labels=early_answer))
    with pytest.raises(ValueError, match=r"image features must be \(B, 1225, Dv\)"):
        run(model, dict(batch, image_features=batch["image_features"][:, :100]))


@pytest.mark.parametrize("stage", [1, 2])
def test_rows_without_prompt_language_or_aux_still_train(model, stage):
    """Only `<image>` before the answer, no aux text, no PS map: experts with no keys pass queries through."""
    model.set_stage(stage)
    features = image_features(model, (0,))
    ids = torch.tensor([[model.image_token_id, 50, model.tokenizer.eos_token_id]])
    out = model(ids, torch.ones_like(ids), torch.tensor([[-100, 50, model.tokenizer.eos_token_id]]),
                image_features=features, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss) and out.gate_weights[1].language.shape == (1, 0, 3)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)


def spliced_plain_call(model, batch, requires_grad=False):
    """The bare LM on the batch's spliced embeddings (a fresh tensor): no MoAI forward involved."""
    from trainer.model.sequence import splice_image_tokens

    with torch.no_grad():
        spliced = splice_image_tokens(batch["input_ids"], batch["attention_mask"], batch["labels"],
                                      model.connector(batch["image_features"]), model.image_token_id,
                                      model.lm.get_input_embeddings())
    embeds = spliced.embeds.clone().requires_grad_(requires_grad)
    out = model.lm(inputs_embeds=embeds, attention_mask=spliced.attention_mask, position_ids=spliced.position_ids,
                   labels=spliced.labels, use_cache=False)
    return out, embeds


def test_no_mixer_layers_is_the_llava_baseline(model, tiny_root):
    """mixer_layers=(): no Compressor, no Mixer, the connector trains alone, logits are the bare LM's."""
    from trainer.model import MoAIConfig

    baseline = MoAIModel.from_config(tiny_config(tiny_root, mixer_layers=())).eval()
    assert baseline.compressor is None and len(baseline.mixers) == 0 and baseline.mixer_layers == ()
    for stage in (1, 2):
        baseline.set_stage(stage)
        assert trainable_names(baseline) == {n for n, _ in baseline.named_parameters() if n.startswith("connector.")}
    assert set(baseline.trainable_state_dict()) == {k for k in baseline.state_dict() if k.startswith("connector.")}
    batch = make_batch(baseline)
    out = baseline(**batch)
    assert torch.isfinite(out.loss) and out.gate_weights == {}
    with torch.no_grad():
        bare, _ = spliced_plain_call(baseline, batch)
    assert_close(out.logits, bare.logits, atol=0, rtol=0)
    assert_close(out.loss, bare.loss, atol=0, rtol=0)
    # The same baseline over a MoAI model's own backbones and connector (shared, not copied).
    view = model.without_mixers()
    assert view.connector is model.connector and view.lm is model.lm and view.compressor is None
    assert view.config == MoAIConfig.from_dict({**model.config.to_dict(), "mixer_layers": []})
    with torch.no_grad():
        assert_close(view(**make_batch(model)).logits, spliced_plain_call(model, make_batch(model))[0].logits,
                     atol=0, rtol=0)
    tokens = baseline.generate(**{k: v for k, v in batch.items() if k != "labels"}, max_new_tokens=3)
    assert tokens.shape[0] == 2 and 1 <= tokens.shape[1] <= 3

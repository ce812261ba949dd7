"""MoAIModel: a frozen CLIP vision tower and causal LM, plus MoAI's connector, Compressor and Mixers.

Batched and masked throughout; the Mixer sees the image tokens and the prompt's language tokens only,
so training matches inference (generated tokens skip it, as published) and no answer leaks backwards.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from trainer.model import internlm2
from trainer.model.compressor import Compressor
from trainer.model.config import MoAIConfig
from trainer.model.connector import Connector
from trainer.model.inject import (GateWeights, MixerRouter, MixerRouting, apply_mixer, check_lm_folder, pre_attention_norms,
                                  prompt_language_slots)
from trainer.model.mixer import Mixer, draw_experts
from trainer.model.sequence import SplicedBatch, left_align, splice_image_tokens
from trainer.model.vision import PixelPreprocessor, encode_vision, interpolate_position_grid, load_clip_vision

CONFIG_FILE = "moai_config.json"
WEIGHTS_FILE = "moai.safetensors"
TRAINABLE_PREFIXES = ("connector.", "compressor.", "mixers.")


@dataclass
class MoAIOutput:
    loss: torch.Tensor | None  # mean next-token loss over answer tokens; None without labels
    logits: torch.Tensor  # (B, T', V) over the spliced sequence (T' = T - 1 + 1225)
    gate_weights: dict[int, GateWeights]  # Mixer layer -> per-token expert weights
    attention_mask: torch.Tensor | None = None  # (B, T') of the spliced sequence
    labels: torch.Tensor | None = None  # (B, T') of the spliced sequence


class MoAIModel(nn.Module):
    """With `MoAIConfig(mixer_layers=())` the same class is the LLaVA-style baseline (CLIP -> connector ->
    LM): no Mixer and no Compressor are built, aux inputs are ignored, and every stage trains the
    connector only. `without_mixers()` gives that baseline over this model's backbones and connector."""

    def __init__(self, config: MoAIConfig, lm: nn.Module, vision: nn.Module, tokenizer,
                 preprocessor: PixelPreprocessor | None = None, connector: Connector | None = None):
        """connector: share an existing connector instead of building a fresh one (see without_mixers)."""
        super().__init__()
        self.config = config
        self.lm = lm
        self.vision = vision
        self.tokenizer = tokenizer
        self.preprocessor = preprocessor
        norms = pre_attention_norms(lm)
        self.mixer_layers = config.resolve_mixer_layers(len(norms))
        dim = lm.config.get_text_config().hidden_size
        # no-op when already at image_size
        interpolate_position_grid(vision, config.image_size, config.compat.has("clip_fp16_positions"))
        vision_dim = vision.config.hidden_size
        grid = config.image_size // vision.config.patch_size
        self.num_image_tokens = grid * grid
        device = lm.get_input_embeddings().weight.device
        with torch.device(device):
            self.connector = connector if connector is not None else Connector(vision_dim, dim).to(config.dtype)
            self.compressor: Compressor | None = None  # without Mixers nothing reads compressed aux tokens
            if self.mixer_layers:
                self.compressor = Compressor(dim, config.num_latents, config.compressor_depth,
                                             config.compressor_heads, config.compressor_head_dim,
                                             config.ff_mult).to(config.dtype)
            self.mixers = nn.ModuleDict(
                {str(i): Mixer(dim, config.expert_rank, config.expert_heads, config.compat.has("gate_half"))
                 for i in self.mixer_layers})
        self.mixers.to(config.dtype)
        self.image_token_id = self._image_token_id(tokenizer, config.image_token)
        self.router = MixerRouter()
        self._hooks = [norms[i].register_forward_hook(functools.partial(self._mixer_hook, i))
                       for i in self.mixer_layers]
        self.stage = 1
        self.set_stage(1)

    # ---- building and saving -------------------------------------------------------------------
    def without_mixers(self) -> "MoAIModel":
        """The LLaVA-style baseline sharing this model's LM, vision tower, tokenizer and connector (not
        copied: training one trains the other's connector), with no Compressor and no Mixer."""
        return type(self)(dataclasses.replace(self.config, mixer_layers=()), self.lm, self.vision, self.tokenizer,
                          self.preprocessor, connector=self.connector)

    @classmethod
    def from_config(cls, config: MoAIConfig) -> "MoAIModel":
        """Load the LM, its tokenizer and CLIP vision from local folders and build MoAI's parts."""
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM, AutoTokenizer

        internlm2.register()  # MoAI's own backbone (internlm2_plora) loads natively, like Llama
        check_lm_folder(config.lm, config.trust_remote_code)
        lm = AutoModelForCausalLM.from_pretrained(config.lm, local_files_only=True, dtype=config.dtype,
                                                  trust_remote_code=config.trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(config.lm, local_files_only=True,
                                                  trust_remote_code=config.trust_remote_code)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        vision = load_clip_vision(config.vision, config.image_size, config.dtype,
                                  config.compat.has("clip_fp16_positions"))
        model = cls(config, lm, vision, tokenizer, PixelPreprocessor(config.vision, config.image_size, config.compat))
        if config.connector_init is not None:  # e.g. XComposer2's vision projector (docs/published.md §4)
            model.connector.load_state_dict(load_file(config.connector_init))
        return model

    @staticmethod
    def _image_token_id(tokenizer, image_token: str) -> int:
        """The placeholder's id, made an atomic special token (a no-op when it already is one).

        A new id is never embedded (the placeholder is replaced by image tokens), so the LM's
        vocabulary need not grow."""
        from tokenizers import AddedToken

        tokenizer.add_tokens([AddedToken(image_token, special=True, normalized=False)], special_tokens=True)
        token_id = tokenizer.convert_tokens_to_ids(image_token)
        if tokenizer(f"a {image_token} b", add_special_tokens=False)["input_ids"].count(token_id) != 1:
            raise ValueError(f"the tokenizer does not keep the image token {image_token!r} in one piece")
        return token_id

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """All of MoAI's own weights (connector, compressor, mixers incl. gates), never the backbones."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(TRAINABLE_PREFIXES)}

    def load_trainable_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        expected = set(self.trainable_state_dict())
        missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
        if missing or unexpected:
            raise ValueError(f"MoAI weights do not match this model: missing {missing[:5]}"
                             f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}")
        self.load_state_dict(state_dict, strict=False)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write MoAI's weights (safetensors) and config; the backbones are referenced by path, not copied."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory / CONFIG_FILE)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.trainable_state_dict().items()}
        save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"stage": str(self.stage)})

    @classmethod
    def from_pretrained(cls, directory: str | Path, **config_overrides) -> "MoAIModel":
        """Rebuild from save_pretrained's folder; `config_overrides` e.g. relocate the backbones."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"no MoAI checkpoint at {directory} ({CONFIG_FILE} missing)")
        config = dataclasses.replace(MoAIConfig.load(directory / CONFIG_FILE), **config_overrides)
        model = cls.from_config(config)
        model.load_trainable_state_dict(load_file(str(directory / WEIGHTS_FILE)))
        with safe_open(str(directory / WEIGHTS_FILE), framework="pt") as f:
            model.set_stage(int((f.metadata() or {}).get("stage", 2)))
        return model

    # ---- training stages -------------------------------------------------------------------------
    def set_stage(self, stage: int) -> None:
        """Stage 1: train connector, compressor (latents included) and experts, draw one expert per side.
        Stage 2: also the gates, mixing all three experts. Everything else stays frozen.
        Without Mixers (mixer_layers=()) both stages train the connector only."""
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage!r}")
        self.stage = stage
        self.requires_grad_(False)
        self.connector.requires_grad_(True)
        if self.compressor is not None:
            self.compressor.requires_grad_(True)
        for mixer in self.mixers.values():
            mixer.image_experts.requires_grad_(True)
            mixer.language_experts.requires_grad_(True)
            mixer.image_gate.requires_grad_(stage == 2)
            mixer.language_gate.requires_grad_(stage == 2)

    def train(self, mode: bool = True) -> "MoAIModel":
        # The LM follows `mode` (HF gradient checkpointing only acts in training mode); the vision
        # tower runs under no_grad and always in eval mode.
        super().train(mode)
        self.vision.eval()
        return self

    # ---- inputs --------------------------------------------------------------------------------
    def image_pixel_values(self, images) -> torch.Tensor:
        """(B, H, W, 3) uint8 RGB -> (B, 3, S, S) CLIP-normalized pixels, squashed to S = image_size."""
        return self._pixels().images(images)

    def ps_pixel_values(self, ps_ids) -> torch.Tensor:
        """(B, S, S) uint8 segment ids -> (B, 3, S, S) pixels of the VOC-coloured map (compat-aware)."""
        return self._pixels().ps_maps(ps_ids)

    def _pixels(self) -> PixelPreprocessor:
        if self.preprocessor is None:
            self.preprocessor = PixelPreprocessor(None, self.config.image_size, self.config.compat)
        return self.preprocessor

    def encode_vision(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) CLIP-normalized pixels -> (B, 1225, Dv) frozen last-layer features, CLS dropped."""
        return encode_vision(self.vision, pixel_values)

    def _features(self, features, pixel_values, name: str) -> torch.Tensor | None:
        if features is not None and pixel_values is not None:
            raise ValueError(f"pass either {name}_features or {name}_pixel_values, not both")
        if pixel_values is not None:
            features = self.encode_vision(pixel_values)
        if features is not None and (features.ndim != 3 or features.shape[1] != self.num_image_tokens):
            raise ValueError(f"{name} features must be (B, {self.num_image_tokens}, Dv), got {tuple(features.shape)}")
        return features

    def _compressed_aux(self, batch_size: int, aux_input_ids, aux_attention_mask, ps_features) -> torch.Tensor:
        """aux = [frozen LM embeddings of the aux text ; connector(PS features)] -> (B, num_latents, D)."""
        device = self.compressor.latents.device
        parts, masks = [], []
        if aux_input_ids is not None:
            if aux_attention_mask is None or aux_attention_mask.shape != aux_input_ids.shape:
                raise ValueError("aux_input_ids needs an aux_attention_mask of the same (B, A) shape")
            if self.config.compat.has("aux_bos_nomask"):
                aux_input_ids, aux_attention_mask = self._published_aux_text(aux_input_ids, aux_attention_mask)
            parts.append(self.lm.get_input_embeddings()(aux_input_ids).to(self.compressor.latents.dtype))
            masks.append(aux_attention_mask.bool())
        if ps_features is not None:
            parts.append(self.connector(ps_features))
            masks.append(torch.ones(ps_features.shape[:2], dtype=torch.bool, device=device))
        if not parts:
            parts.append(self.compressor.latents.new_zeros(batch_size, 0, self.compressor.latents.shape[1]))
            masks.append(torch.zeros(batch_size, 0, dtype=torch.bool, device=device))
        return self.compressor(torch.cat(parts, dim=1), torch.cat(masks, dim=1))

    def _published_aux_text(self, aux_input_ids, aux_attention_mask):
        """The published aux text (docs/published.md §5): BOS first, padded to the longest row, no mask.
        (B, A) right-padded ids -> (B, 1 + longest) ids and an all-ones mask."""
        if self.tokenizer.bos_token_id is None:
            raise ValueError("compat quirk aux_bos_nomask needs a tokenizer with a BOS token")
        longest = int(aux_attention_mask.sum(dim=1).max())
        bos = aux_input_ids.new_full((aux_input_ids.shape[0], 1), self.tokenizer.bos_token_id)
        ids = torch.cat([bos, aux_input_ids[:, :longest]], dim=1)  # (B, 1 + longest)
        return ids, torch.ones_like(ids)

    def image_mask_kwargs(self, batch: SplicedBatch) -> dict:
        """`im_mask` for LMs with an image-token path (InternLM2 with PLoRA), nothing for the others."""
        return {"im_mask": batch.image_flags} if getattr(self.lm, "accepts_im_mask", False) else {}

    def _prepare(self, input_ids, attention_mask, labels, aux_input_ids, aux_attention_mask, image_features,
                 pixel_values, ps_features, ps_pixel_values, generator, for_generation=False) -> SplicedBatch:
        image_features = self._features(image_features, pixel_values, "image")
        if image_features is None:
            raise ValueError("forward needs image_features or pixel_values")
        ps_features = self._features(ps_features, ps_pixel_values, "ps") if self.mixer_layers else None
        batch = splice_image_tokens(input_ids, attention_mask, labels, self.connector(image_features),
                                    self.image_token_id, self.lm.get_input_embeddings())
        if for_generation:
            batch = left_align(batch)
        if self.config.compat.has("buffer_positions"):  # RoPE at buffer indices: left padding shifts them
            positions = torch.arange(batch.embeds.shape[1], device=batch.embeds.device)
            batch = dataclasses.replace(batch, position_ids=positions[None].expand_as(batch.attention_mask))
        if not self.mixer_layers:  # the baseline: nothing to route, aux inputs unused
            return batch
        aux = self._compressed_aux(input_ids.shape[0], aux_input_ids, aux_attention_mask, ps_features)
        image_index, image_mask = prompt_language_slots(batch.image_flags)
        assert bool(image_mask.all()) and image_index.shape[1] == self.num_image_tokens
        language_index, language_mask = prompt_language_slots(batch.prompt_language_flags)
        # Drawn before the LM runs, in layer order, so a recomputed layer reuses its draw.
        experts = {i: draw_experts(generator) for i in self.mixer_layers} if self.stage == 1 else {}
        self.router.start(MixerRouting(batch.embeds.shape[1], image_index, language_index, language_mask, aux,
                                       self.stage, experts))
        return batch

    def _mixer_hook(self, layer: int, module, args, output):
        normed_input = args[0] if args else None
        routing = self.router.routing_for(layer, normed_input)
        # Only the prefill carries the full sequence; cached generation steps skip the Mixer.
        if routing is None or output.ndim != 3 or output.shape[1] != routing.seq_len \
                or output.shape[0] != routing.image_index.shape[0]:
            return None
        self.router.mixing(layer, routing, normed_input)
        return apply_mixer(self.mixers[str(layer)], layer, routing, output)

    # ---- running -------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None,
                aux_input_ids: torch.Tensor | None = None, aux_attention_mask: torch.Tensor | None = None,
                image_features: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                ps_features: torch.Tensor | None = None, ps_pixel_values: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> MoAIOutput:
        """input_ids/attention_mask/labels (B, T) with one image token per row; aux_* (B, A);
        image_features/ps_features (B, 1225, Dv) or the matching (B, 3, S, S) pixel values.

        LM gradient checkpointing must be non-reentrant (use_reentrant=False, the recipe's setting): the
        reentrant kind backpropagates into the shared aux tokens once per Mixer layer and fails."""
        batch = self._prepare(input_ids, attention_mask, labels, aux_input_ids, aux_attention_mask, image_features,
                              pixel_values, ps_features, ps_pixel_values, generator)
        routing = self.router.current
        # A gradient-checkpointing recompute in backward runs the hooks again (see MixerRouter).
        recompute_expected = torch.is_grad_enabled() and any(
            getattr(m, "gradient_checkpointing", False) is True for m in self.lm.modules())
        try:
            out = self.lm(inputs_embeds=batch.embeds, attention_mask=batch.attention_mask,
                          position_ids=batch.position_ids, labels=batch.labels, use_cache=False,
                          **self.image_mask_kwargs(batch))
        finally:
            self.router.finish(recompute_expected)
        gate_weights = dict(routing.gate_weights) if routing is not None else {}
        return MoAIOutput(out.loss, out.logits, gate_weights, batch.attention_mask, batch.labels)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int = 64,
                 aux_input_ids: torch.Tensor | None = None, aux_attention_mask: torch.Tensor | None = None,
                 image_features: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                 ps_features: torch.Tensor | None = None, ps_pixel_values: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Greedy, KV-cached answers (B, <= max_new_tokens) to prompts (B, T) (any padding side).
        The Mixer runs on the prefill only; generated tokens skip it, as published."""
        from transformers import GenerationConfig

        batch = self._prepare(input_ids, attention_mask, None, aux_input_ids, aux_attention_mask, image_features,
                              pixel_values, ps_features, ps_pixel_values, generator, for_generation=True)
        tok = self.tokenizer
        settings = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                    bos_token_id=tok.bos_token_id)
        try:
            return self.lm.generate(inputs_embeds=batch.embeds, attention_mask=batch.attention_mask,
                                    position_ids=batch.position_ids, **self.image_mask_kwargs(batch),
                                    generation_config=settings)
        finally:
            self.router.finish()

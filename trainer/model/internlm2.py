"""InternLM2 with PLoRA: InternLM-XComposer2's language model, MoAI's own backbone, as a model of ours.

docs/published.md §2-§3: a Llama-shaped decoder (RMSNorm, rotate-half RoPE, GQA, SwiGLU) whose five
linears per layer (q/k/v fused, o, gate, up, down) carry PLoRA, a low-rank path that only image
tokens take. `im_mask` (B, T) marks them in the merged sequence; without it (text only, or a
generated token) every linear is its main weight alone. Layer and norm names follow Llama
(`input_layernorm`, `self_attn`, `post_attention_layernorm`), so MoAI's Mixer hooks attach as on any
Llama-family LM. Registered with transformers' Auto classes as `internlm2_plora`: a converted folder
(`python -m trainer.published convert`) loads with `AutoModelForCausalLM.from_pretrained`, no remote code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

MODEL_TYPE = "internlm2_plora"


class InternLM2PLoRAConfig(PreTrainedConfig):
    """Sizes default to InternLM-XComposer2-VL-7B (docs/published.md §1).

    vocab_size: rows of the output head; num_embeddings: rows of the input embedding (the published
    one has one more, for `<image>`, which is never embedded). plora_*: rank r, alpha (the LoRA
    path is scaled by alpha / r) and dropout on its input (0: the backbone is frozen in MoAI).
    """

    model_type = MODEL_TYPE
    vocab_size: int = 92544
    num_embeddings: int | None = None
    hidden_size: int = 4096
    intermediate_size: int = 14336
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    rms_norm_eps: float = 1e-5
    rope_theta: float = 1e6
    max_position_embeddings: int = 32768
    attention_bias: bool = False
    plora_rank: int = 256
    plora_alpha: float = 256.0
    plora_dropout: float = 0.0
    initializer_range: float = 0.02
    use_cache: bool = True
    pad_token_id: int | None = 2
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if self.num_embeddings is None:
            self.num_embeddings = self.vocab_size
        super().__post_init__(**kwargs)
        if self.hidden_size % self.num_attention_heads or self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"hidden_size {self.hidden_size}, {self.num_attention_heads} heads and "
                             f"{self.num_key_value_heads} KV heads do not divide evenly")
        if self.num_embeddings < self.vocab_size:
            raise ValueError(f"num_embeddings {self.num_embeddings} < vocab_size {self.vocab_size}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


class PLoRALinear(nn.Module):
    """y = x Wᵀ (+ b), and on image rows also + B(A(dropout(x))) · alpha / r (docs/published.md §3)."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float, dropout: float = 0.0,
                 bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.lora_A = nn.Linear(in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, out_features, bias=False)
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, im_mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, T, in), im_mask (B, T) bool or None -> (B, T, out)."""
        y = F.linear(x, self.weight, self.bias)
        if im_mask is None:
            return y
        lora = self.lora_B(self.lora_A(self.dropout(x))) * self.scaling
        # where, not a product with the mask: text rows stay exactly the main weight's output.
        return torch.where(im_mask[..., None], y + lora, y)


class InternLM2RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In float32, cast back, then the weight (no offset), as InternLM2 does.
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, base: float, dtype: torch.dtype):
    """positions (B, T) -> cos, sin (B, 1, T, hd) for rotate-half RoPE (the Llama convention)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    freqs = positions.float()[..., None] * inv_freq  # (B, T, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # (B, 1, T, hd)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


class InternLM2Attention(nn.Module):
    """GQA self-attention; q, k, v come from one PLoRA linear whose output is [q | k | v] (the published
    wqkv groups them per KV head; the converter regroups, see trainer/published/layout.py)."""

    def __init__(self, config: InternLM2PLoRAConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.heads, self.kv_heads, self.head_dim = (config.num_attention_heads, config.num_key_value_heads,
                                                    config.head_dim)
        self.rope_theta = config.rope_theta
        plora = (config.plora_rank, config.plora_alpha, config.plora_dropout)
        width = (self.heads + 2 * self.kv_heads) * self.head_dim
        self.qkv_proj = PLoRALinear(config.hidden_size, width, *plora, bias=config.attention_bias)
        self.o_proj = PLoRALinear(self.heads * self.head_dim, config.hidden_size, *plora,
                                  bias=config.attention_bias)

    def forward(self, x, positions, attn_mask, im_mask, cache: Cache | None):
        """x (B, T, D), positions (B, T), attn_mask (B, 1, T, S) bool or None (= causal) -> (B, T, D)."""
        B, T, _ = x.shape
        hd = self.head_dim
        q, k, v = self.qkv_proj(x, im_mask).split([self.heads * hd, self.kv_heads * hd, self.kv_heads * hd], -1)
        q = q.view(B, T, self.heads, hd).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(B, T, self.kv_heads, hd).transpose(1, 2)  # (B, Hkv, T, hd)
        v = v.view(B, T, self.kv_heads, hd).transpose(1, 2)  # (B, Hkv, T, hd)
        cos, sin = rope_cos_sin(positions, hd, self.rope_theta, q.dtype)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, Hkv, S, hd)
        # KV head j serves query heads j*G .. j*G+G-1: SDPA's enable_gqa repeats each KV head G times in place.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=attn_mask is None and T > 1,
                                             enable_gqa=self.kv_heads != self.heads)  # (B, H, T, hd)
        out = out.transpose(1, 2).reshape(B, T, self.heads * hd)  # (B, T, H*hd)
        return self.o_proj(out, im_mask)


class InternLM2MLP(nn.Module):
    def __init__(self, config: InternLM2PLoRAConfig):
        super().__init__()
        plora = (config.plora_rank, config.plora_alpha, config.plora_dropout)
        d, ffn = config.hidden_size, config.intermediate_size
        self.gate_proj = PLoRALinear(d, ffn, *plora)  # published w1
        self.up_proj = PLoRALinear(d, ffn, *plora)  # published w3
        self.down_proj = PLoRALinear(ffn, d, *plora)  # published w2

    def forward(self, x, im_mask):
        return self.down_proj(F.silu(self.gate_proj(x, im_mask)) * self.up_proj(x, im_mask), im_mask)


class InternLM2DecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: InternLM2PLoRAConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = InternLM2RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = InternLM2Attention(config, layer_idx)
        self.post_attention_layernorm = InternLM2RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = InternLM2MLP(config)

    def forward(self, x, positions=None, attn_mask=None, im_mask=None, cache=None):
        # MoAI's Mixer (a hook on input_layernorm) may rewrite the normed states; the residual stays x.
        x = x + self.self_attn(self.input_layernorm(x), positions, attn_mask, im_mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x), im_mask)


class InternLM2PLoRAPreTrainedModel(PreTrainedModel):
    config_class = InternLM2PLoRAConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["InternLM2DecoderLayer"]
    _supports_sdpa = True

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, PLoRALinear):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)


def attention_mask_4d(attention_mask: torch.Tensor | None, T: int, S: int) -> torch.Tensor | None:
    """(B, S) 0/1 mask over cache + new tokens -> (B, 1, T, S) bool (causal and padding), or None when
    no padding leaves SDPA's own causal mask (prefill) or no mask at all (one new token) enough."""
    if attention_mask is None or bool(attention_mask.all()):
        if S == T or T == 1:
            return None
        attention_mask = None
    device = attention_mask.device if attention_mask is not None else None
    query = torch.arange(S - T, S, device=device)[:, None]  # (T, 1) buffer index of each new token
    allowed = (torch.arange(S, device=device)[None, :] <= query)[None, None]  # (1, 1, T, S)
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, None, :]  # (B, 1, T, S)
    # A padding query may see no key at all: let it see all (its output is never used) rather than NaN.
    return allowed | ~allowed.any(dim=-1, keepdim=True)


class InternLM2PLoRAModel(InternLM2PLoRAPreTrainedModel):
    def __init__(self, config: InternLM2PLoRAConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.num_embeddings, config.hidden_size)
        self.layers = nn.ModuleList(InternLM2DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = InternLM2RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache: Cache | None = None,
                inputs_embeds=None, im_mask=None, use_cache=None, **kwargs) -> BaseModelOutputWithPast:
        """input_ids (B, T) or inputs_embeds (B, T, D); attention_mask (B, S) over cache + new tokens;
        position_ids (B, T) (default: cumulative mask positions); im_mask (B, T) bool image tokens."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        B, T, _ = x.shape
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            if attention_mask is not None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
            else:
                position_ids = torch.arange(past, past + T, device=x.device)[None].expand(B, -1)
        if im_mask is not None:
            if im_mask.shape != (B, T):
                raise ValueError(f"im_mask {tuple(im_mask.shape)} must be (B, T) = {(B, T)}")
            im_mask = im_mask.bool() if bool(im_mask.any()) else None  # text only: no LoRA work at all
        attn_mask = attention_mask_4d(attention_mask, T, past + T)
        for layer in self.layers:
            x = layer(x, positions=position_ids, attn_mask=attn_mask, im_mask=im_mask,
                      cache=cache if use_cache else None)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(x), cache=cache if use_cache else None)


class InternLM2PLoRAForCausalLM(InternLM2PLoRAPreTrainedModel, GenerationMixin):
    accepts_im_mask = True  # MoAIModel passes its image-token mask as `im_mask`

    def __init__(self, config: InternLM2PLoRAConfig):
        super().__init__(config)
        self.model = InternLM2PLoRAModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def get_decoder(self):
        return self.model

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache: Cache | None = None,
                inputs_embeds=None, labels=None, im_mask=None, use_cache=None, logits_to_keep: int = 0,
                **kwargs) -> CausalLMOutputWithPast:
        """As InternLM2PLoRAModel.forward; labels (B, T) with -100 where no loss -> mean next-token loss."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         cache=cache, inputs_embeds=inputs_embeds, im_mask=im_mask, use_cache=use_cache)
        hidden = out.last_hidden_state
        logits = self.lm_head(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)  # (B, T, V)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=out.cache)

    def prepare_inputs_for_generation(self, input_ids, next_sequence_length=None, cache=None, attention_mask=None,
                                      inputs_embeds=None, is_first_iteration=False, im_mask=None, **kwargs):
        inputs = super().prepare_inputs_for_generation(
            input_ids, next_sequence_length=next_sequence_length, cache=cache, attention_mask=attention_mask,
            inputs_embeds=inputs_embeds, is_first_iteration=is_first_iteration, **kwargs)
        # Only the prompt holds image tokens; generated tokens take the main weights alone.
        if is_first_iteration and im_mask is not None:
            inputs["im_mask"] = im_mask
        return inputs


def register() -> None:
    """Make `internlm2_plora` folders loadable by transformers' Auto classes (idempotent)."""
    from transformers import CONFIG_MAPPING

    if MODEL_TYPE not in CONFIG_MAPPING:
        AutoConfig.register(MODEL_TYPE, InternLM2PLoRAConfig)
        AutoModelForCausalLM.register(InternLM2PLoRAConfig, InternLM2PLoRAForCausalLM)


register()

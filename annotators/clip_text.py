"""CLIP text tower through transformers, and the CLIP tokenizer built offline.

YOLO-World's class embeddings live in OpenAI CLIP ViT-B/32's text space: transformers'
`CLIPTextModelWithProjection` on `openai/clip-vit-base-patch32` gives the same embeddings as
the git-installed `clip` package ultralytics would fetch, without it and without downloads.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from schemas.dtypes import torch_dtype

from .hf import hf_load, pretrained_folder, weight_hashes

CLIP_CONTEXT_LENGTH = 77


# ---- CLIP tokenizer built offline from open_clip's bundled BPE ----------------------------------

def _bytes_to_unicode() -> dict[int, str]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def build_clip_tokenizer(bpe_path: str | Path | None = None):
    """transformers' CLIPTokenizer from open_clip_torch's `bpe_simple_vocab_16e6.txt.gz`.

    Gives the known CLIP ids (49,408 tokens) with no hub access; used for tiny models.
    """
    from transformers import CLIPTokenizer
    if bpe_path is None:
        try:
            import open_clip
        except ImportError as err:
            raise ImportError("building a CLIP tokenizer offline needs open_clip_torch (extra 'yolo')") from err
        bpe_path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe_path, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CLIP_CONTEXT_LENGTH)


# ---- the text tower ----------------------------------------------------------------------------

class CLIPTextEncoder:
    """Names -> (N, D) L2-normalized CLIP text embeddings (projected), as CLIP's encode_text."""

    def __init__(self, model: str, device: str = "cpu", dtype: str = "float32",
                 trust_remote_code: bool = False):
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer
        self.model_id = model
        self.device = device
        self.tokenizer = hf_load(CLIPTokenizer, model, trust_remote_code=trust_remote_code)
        self.model = hf_load(CLIPTextModelWithProjection, model, trust_remote_code=trust_remote_code,
                             dtype=torch_dtype(dtype, device)).to(device).eval()

    def __call__(self, names: list[str] | tuple[str, ...], batch_size: int = 256) -> np.ndarray:
        import torch
        chunks = []
        for start in range(0, len(names), batch_size):
            tokens = self.tokenizer(list(names[start:start + batch_size]), padding="max_length",
                                    max_length=CLIP_CONTEXT_LENGTH, truncation=True, return_tensors="pt")
            with torch.inference_mode():
                embeds = self.model(**tokens.to(self.device)).text_embeds.float()  # (n, D)
            chunks.append(torch.nn.functional.normalize(embeds, dim=-1).cpu())
        return torch.cat(chunks).numpy()  # (N, D)

    def provenance(self) -> dict:
        return {"model": self.model_id, "weights_sha256": weight_hashes(pretrained_folder(self.model_id))}


def tiny_clip_text(workdir: Path, projection_dim: int = 512) -> Path:
    """A small random-weight CLIP text tower + real CLIP tokenizer under workdir (idempotent)."""
    folder = Path(workdir) / "clip-text-tiny"
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection
    torch.manual_seed(0)
    config = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            projection_dim=projection_dim, max_position_embeddings=CLIP_CONTEXT_LENGTH)
    CLIPTextModelWithProjection(config).save_pretrained(folder)
    build_clip_tokenizer().save_pretrained(folder)
    return folder

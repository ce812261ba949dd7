"""The frozen vision path: CLIP ViT at 490 px (35x35 patches) for the photo and the PS colour map.

docs/moai.md §4, §7: position embeddings interpolated once to the larger grid, last layer, CLS dropped.
The PS map is coloured with the VOC colormap by segment id and fed through the same tower.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from schemas.psmap import colorize
from trainer.model.config import ModelCompat


def load_clip_vision(path: str, image_size: int, dtype: torch.dtype, round_fp16: bool = False):
    """A local CLIPVisionModel, frozen, with its position grid resized to `image_size`
    (round_fp16: the resized table rounded through float16, as the published model stores it)."""
    from transformers import CLIPVisionModel

    if not Path(path, "config.json").is_file():
        raise FileNotFoundError(f"no CLIP vision model at {path!r} (config.json missing); MoAI loads its "
                                "vision backbone from a local folder only, nothing is downloaded")
    vision = CLIPVisionModel.from_pretrained(path, local_files_only=True, dtype=dtype)
    interpolate_position_grid(vision, image_size, round_fp16)
    vision.requires_grad_(False)
    return vision.eval()


def interpolate_position_grid(vision, image_size: int, round_fp16: bool = False) -> None:
    """Resize a CLIP vision model's position embeddings (bicubic, CLS kept) to serve `image_size` px;
    round_fp16 rounds the resized table (CLS row included) through float16 (compat quirk)."""
    # transformers 5 keeps the embeddings on the model itself; 4.x under .vision_model
    embeddings = getattr(vision, "embeddings", None) or vision.vision_model.embeddings
    patch = embeddings.patch_size
    if image_size % patch:
        raise ValueError(f"image_size {image_size} is not a multiple of the CLIP patch size {patch}")
    old = embeddings.position_embedding.weight.detach()  # (1 + g*g, Dv)
    old_grid = int(round((old.shape[0] - 1) ** 0.5))
    if old_grid * old_grid != old.shape[0] - 1:
        raise ValueError(f"CLIP position embeddings of {old.shape[0] - 1} patches are not a square grid")
    grid = image_size // patch
    if grid != old_grid:
        dim = old.shape[1]
        patches = old[1:].float().reshape(1, old_grid, old_grid, dim).permute(0, 3, 1, 2)  # (1, Dv, g, g)
        patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
        patches = patches.permute(0, 2, 3, 1).reshape(grid * grid, dim)  # (G*G, Dv)
        resized = nn.Embedding(grid * grid + 1, dim, device=old.device, dtype=old.dtype)
        table = torch.cat([old[:1].float(), patches])  # (1 + G*G, Dv)
        if round_fp16:
            table = table.half().float()
        resized.weight.data.copy_(table.to(old.dtype))
        embeddings.position_embedding = resized
        embeddings.register_buffer("position_ids", torch.arange(grid * grid + 1, device=old.device)[None],
                                   persistent=False)
    embeddings.image_size = image_size
    embeddings.num_patches = grid * grid
    embeddings.num_positions = grid * grid + 1
    vision.config.image_size = image_size


class PixelPreprocessor:
    """uint8 photos and PS segment-id maps -> CLIP-normalized (B, 3, S, S) pixel values."""

    def __init__(self, vision_path: str | None, image_size: int, compat: ModelCompat | str = "none"):
        from transformers import CLIPImageProcessor

        kwargs = dict(size={"height": image_size, "width": image_size}, do_center_crop=False)
        if vision_path is not None and Path(vision_path, "preprocessor_config.json").is_file():
            self.processor = CLIPImageProcessor.from_pretrained(vision_path, local_files_only=True, **kwargs)
        else:  # OpenAI CLIP's constants are CLIPImageProcessor's defaults.
            self.processor = CLIPImageProcessor(**kwargs)
        self.image_size = image_size
        self.ps_range_quirk = ModelCompat.parse(compat).has("ps_range")
        self.mean = torch.tensor(self.processor.image_mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(self.processor.image_std, dtype=torch.float32)[:, None, None]

    def images(self, images) -> torch.Tensor:
        """(B, H, W, 3) uint8 RGB (array, tensor or list of them) -> (B, 3, S, S) float32, squashed to S x S.

        Returned on the input's device when given a tensor, else on the CPU.
        """
        batch = [_to_numpy(image) for image in images]
        for image in batch:
            if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
                raise ValueError(f"images must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        return self.processor(images=batch, return_tensors="pt")["pixel_values"].float().to(_device_of(images))

    def ps_maps(self, ps_ids) -> torch.Tensor:
        """(B, H, W) segment ids -> (B, 3, S, S) float32 of the VOC-coloured map (docs/moai.md §4)."""
        maps = [_to_numpy(ps) for ps in ps_ids]
        out = []
        for ps in maps:
            if ps.ndim != 2:
                raise ValueError(f"a PS map must be (H, W) segment ids, got shape {ps.shape}")
            rgb = torch.from_numpy(colorize(ps)).permute(2, 0, 1).float() / 255.0  # (3, H, W) in [0, 1]
            if rgb.shape[1:] != (self.image_size, self.image_size):
                # Segment ids are labels: resize the colours without blending neighbours.
                rgb = F.interpolate(rgb[None], size=(self.image_size,) * 2, mode="nearest")[0]
            if self.ps_range_quirk:  # published quirk: [0, 1] colours rescaled again as if 0-255
                rgb = rgb / 255.0
            out.append((rgb - self.mean) / self.std)
        return torch.stack(out).to(_device_of(ps_ids))


def _to_numpy(array) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def _device_of(batch) -> torch.device:
    return batch.device if isinstance(batch, torch.Tensor) else torch.device("cpu")


def encode_vision(vision, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) normalized pixels -> (B, (S/14)^2, Dv) last-layer patch features (CLS dropped)."""
    expected = vision.config.image_size
    if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (3, expected, expected):
        raise ValueError(f"pixel_values must be (B, 3, {expected}, {expected}), got {tuple(pixel_values.shape)}")
    param = next(vision.parameters())
    with torch.no_grad():
        hidden = vision(pixel_values=pixel_values.to(param.device, param.dtype)).last_hidden_state
    return hidden[:, 1:]

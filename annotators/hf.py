"""Hugging Face checkpoints for the transformers-based annotators: offline loading with clear
errors, the local folder behind an id, weight hashes for provenance, dtypes."""
from __future__ import annotations

from pathlib import Path

from .base import MissingWeightsError, Requirement, set_offline, sha256_file

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def hf_load(loader, model: str, *, trust_remote_code: bool = False, **kwargs):
    """`loader.from_pretrained(model)` offline; a missing checkpoint raises MissingWeightsError.

    `local_files_only` as well as the env switches: a library imported before `set_offline` ran
    has already read HF_HUB_OFFLINE, and must still not reach for the network.
    """
    from huggingface_hub.errors import HFValidationError
    set_offline()
    if _looks_like_path(model) and not Path(model).is_dir():
        raise MissingWeightsError(missing_weights_message(model, f"{model} is not a folder."))
    try:
        return loader.from_pretrained(model, trust_remote_code=trust_remote_code, local_files_only=True,
                                      **kwargs)
    except (OSError, HFValidationError) as err:
        raise MissingWeightsError(missing_weights_message(model, str(err))) from err


def _looks_like_path(model: str) -> bool:
    return Path(model).is_absolute() or model.startswith((".", "~")) or model.count("/") > 1


def missing_weights_message(model: str, detail: str = "") -> str:
    if _looks_like_path(model) or Path(model).exists():
        how = "point the config's `model` at a folder written by save_pretrained"
    else:
        how = (f"on a machine with network run `hf download {model}` (or "
               f"`huggingface_hub.snapshot_download('{model}')`) and copy the HF cache "
               "(~/.cache/huggingface/hub or $HF_HOME) here, or pass a local folder as `model`")
    return f"weights for {model!r} are not on this machine (the hub is offline): {how}. {detail}".strip()


def pretrained_folder(model: str) -> Path | None:
    """The local folder holding `model` (a path, or its snapshot in the offline HF cache)."""
    if Path(model).is_dir():
        return Path(model)
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(model, local_files_only=True))
    except Exception:  # not a repo id, or not cached: nothing to hash
        return None


def hf_requirement(key: str, model: str, what: str) -> Requirement:
    """Is `model` (a folder, or a hub id in the offline HF cache) on this machine? Loads nothing."""
    set_offline()
    folder = pretrained_folder(model)
    found = folder is not None and (folder / "config.json").is_file()
    if folder is None and not _looks_like_path(model):
        from huggingface_hub import constants
        folder = Path(constants.HF_HUB_CACHE) / f"models--{model.replace('/', '--')}"
    return Requirement(key, f"{what} {model}", str(folder if folder is not None else model), found,
                       "" if found else missing_weights_message(model))


def weight_hashes(folder: Path | None) -> dict[str, str]:
    """{file name: sha256} of the weight files in a checkpoint folder (symlinks followed)."""
    if folder is None:
        return {}
    files = sorted(p for p in Path(folder).iterdir() if p.suffix in WEIGHT_SUFFIXES)
    return {p.name: sha256_file(p.resolve()) for p in files}

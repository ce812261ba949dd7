"""PaddleOCR model folders built from the real PP-OCR weights that ship inside registry wheels.

PaddleOCR loads a model from a folder holding `inference.yml` (pre/post-processing, and for
recognition the character dictionary) plus the weights (`inference.onnx` for the ONNX Runtime
engine). The `rapidocr` and `rapidocr_onnxruntime` wheels carry exported PP-OCR det/rec ONNX files
with the dictionary embedded in the ONNX metadata (`character`), but no `inference.yml`. This
module writes those folders, byte-for-byte the same on every run:

    python -m annotators.ppocr_models OUT_DIR [--models PP-OCRv6_small_det PP-OCRv6_small_rec]

Each folder also gets `source.json` (wheel, version, file, sha256) so a rerun is a no-op and
provenance can say where the weights came from.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from schemas.files import replaced_atomically

from .base import MissingWeightsError, sha256_file

ONNX_FILE = "inference.onnx"
CONFIG_FILE = "inference.yml"
SOURCE_FILE = "source.json"
FORMAT_VERSION = 1  # bump when the written inference.yml changes, so old folders are rebuilt


@dataclass(frozen=True)
class WheelModel:
    """One PP-OCR model inside an installed wheel, under the name PaddleX knows it by."""
    name: str            # PaddleX model name, e.g. "PP-OCRv6_small_det"
    task: str            # "det" | "rec"
    package: str         # import name of the package that ships it
    distribution: str    # its name on PyPI (for the version and the error message)
    path: str            # file inside the package
    rec_height: int = 48  # recognition input height the model was exported for


WHEEL_MODELS: dict[str, WheelModel] = {m.name: m for m in (
    WheelModel("PP-OCRv6_small_det", "det", "rapidocr", "rapidocr", "models/PP-OCRv6_det_small.onnx"),
    WheelModel("PP-OCRv6_small_rec", "rec", "rapidocr", "rapidocr", "models/PP-OCRv6_rec_small.onnx"),
    WheelModel("PP-OCRv4_mobile_det", "det", "rapidocr_onnxruntime", "rapidocr_onnxruntime",
               "models/ch_PP-OCRv4_det_infer.onnx"),
    WheelModel("PP-OCRv4_mobile_rec", "rec", "rapidocr_onnxruntime", "rapidocr_onnxruntime",
               "models/ch_PP-OCRv4_rec_infer.onnx"),
)}
DEFAULT_DET = "PP-OCRv6_small_det"
DEFAULT_REC = "PP-OCRv6_small_rec"



def wheel_file(model: WheelModel) -> Path:
    """The ONNX file inside the installed package, found without importing the package."""
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(
            f"{model.name} ships in the {model.distribution!r} wheel, which is not installed: "
            f"pip install -c constraints.txt {model.distribution}")
    path = Path(next(iter(spec.submodule_search_locations))) / model.path
    if not path.is_file():
        raise MissingWeightsError(f"{model.name}: {path} is missing from the installed "
                                  f"{model.distribution} {_version(model.distribution)}")
    return path


def read_dictionary(onnx_path: Path) -> list[str]:
    """The recognition characters stored in the ONNX metadata (blank and space are implicit)."""
    import onnxruntime as ort
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    characters = session.get_modelmeta().custom_metadata_map.get("character")
    if not characters:
        raise ValueError(f"{onnx_path} has no 'character' dictionary in its ONNX metadata")
    dictionary = characters.split("\n")
    # CTC output = blank + dictionary + space: check the model agrees before writing the folder.
    classes = session.get_outputs()[0].shape[-1]
    if isinstance(classes, int) and classes != len(dictionary) + 2:
        raise ValueError(f"{onnx_path}: {classes} output classes but {len(dictionary)} characters "
                         "(+ blank + space) in its dictionary")
    return dictionary


def inference_config(model: WheelModel, dictionary: list[str] | None) -> dict:
    """The inference.yml PaddleX's text det/rec predictors read (PP-OCR's exported settings)."""
    decode = {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}}
    if model.task == "det":
        return {
            "Global": {"model_name": model.name},
            "PreProcess": {"transform_ops": [
                decode,
                {"DetResizeForTest": {"resize_long": 960}},
                {"NormalizeImage": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                    "scale": 1 / 255, "order": "hwc"}},
                {"ToCHWImage": None},
            ]},
            "PostProcess": {"name": "DBPostProcess", "thresh": 0.3, "box_thresh": 0.6,
                            "max_candidates": 1000, "unclip_ratio": 1.5},
        }
    return {
        "Global": {"model_name": model.name},
        "PreProcess": {"transform_ops": [
            decode,
            {"RecResizeImg": {"image_shape": [3, model.rec_height, 320]}},
        ]},
        "PostProcess": {"name": "CTCLabelDecode", "character_dict": dictionary},
    }


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def prepare_model(name: str, out_dir: str | Path) -> Path:
    """Write (or reuse) `out_dir/name/` for PaddleOCR; returns the folder. Idempotent."""
    import yaml

    if name not in WHEEL_MODELS:
        raise ValueError(f"unknown wheel model {name!r}; choose from {sorted(WHEEL_MODELS)}")
    model = WHEEL_MODELS[name]
    source_path = wheel_file(model)
    source = {"format": FORMAT_VERSION, "model_name": name, "distribution": model.distribution,
              "version": _version(model.distribution), "file": model.path,
              "sha256": sha256_file(source_path)}
    folder = Path(out_dir) / name
    stamp = folder / SOURCE_FILE
    if stamp.is_file() and json.loads(stamp.read_text()) == source \
            and (folder / ONNX_FILE).is_file() and (folder / CONFIG_FILE).is_file():
        return folder

    dictionary = read_dictionary(source_path) if model.task == "rec" else None
    with replaced_atomically(folder) as tmp:  # a concurrent reader never sees half a folder
        shutil.copyfile(source_path, tmp / ONNX_FILE)
        with open(tmp / CONFIG_FILE, "w", encoding="utf-8") as f:
            yaml.safe_dump(inference_config(model, dictionary), f, allow_unicode=True, sort_keys=False)
        (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=2, sort_keys=True) + "\n")
    return folder


def prepare_models(out_dir: str | Path, names: tuple[str, ...] = (DEFAULT_DET, DEFAULT_REC)) -> dict[str, Path]:
    return {name: prepare_model(name, out_dir) for name in names}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m annotators.ppocr_models", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--models", nargs="+", default=[DEFAULT_DET, DEFAULT_REC],
                        choices=sorted(WHEEL_MODELS))
    args = parser.parse_args(argv)
    for name, folder in prepare_models(args.out_dir, tuple(args.models)).items():
        print(f"{name}\t{folder}")


if __name__ == "__main__":
    main()

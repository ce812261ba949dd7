"""A tiny real torch model wrapped as an annotator, for fault injection in the pipeline tests only.

It fills `detections` with one box per image computed by a small random-init conv net; options
make it crash its worker process once or on every attempt at a bright image, fail dark images, or
go slowly (so a test can kill the driver mid-run).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from annotators.base import Failed, check_images


@dataclass(frozen=True)
class ToyConfig:
    seed: int = 0
    crash_once_marker: str = ""   # if set and the file is absent: create it, then kill this process
    crash_above_mean: float = 256.0  # a batch holding an image brighter than this kills the process, every time
    fail_below_mean: float = -1.0  # images with a mean pixel value below this give Failed
    sleep_s: float = 0.0           # per batch


class ToyDetector:
    name = "owod"
    columns = ("detections",)
    Config = ToyConfig

    def __init__(self, config: ToyConfig):
        self.config = config
        torch.manual_seed(config.seed)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=4), torch.nn.ReLU(),
                                       torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5))

    def __call__(self, images: np.ndarray) -> list:
        images = check_images(images)
        if self.config.crash_once_marker and not Path(self.config.crash_once_marker).exists():
            Path(self.config.crash_once_marker).write_text(str(os.getpid()))
            os._exit(17)  # a hard worker crash, as a segfault or OOM kill would be
        if any(image.mean() > self.config.crash_above_mean for image in images):
            os._exit(18)  # an input that segfaults the model on every attempt
        time.sleep(self.config.sleep_s)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255  # (B, 3, H, W)
        with torch.no_grad():
            out = self.net(x).sigmoid()  # (B, 5)
        results = []
        for image, row in zip(images, out.tolist()):
            if image.mean() < self.config.fail_below_mean:
                results.append(Failed("too dark for the toy detector"))
                continue
            x0, y0 = min(row[0], row[1]) * 0.5, min(row[2], row[3]) * 0.5
            results.append({"detections": [{"label": "toy", "query_index": 0, "score": row[4],
                                            "box": [x0, y0, x0 + 0.5, y0 + 0.5]}]})
        return results

    def provenance(self) -> dict:
        return {"model": "toy-conv", "seed": self.config.seed}


def toy_stage(**options) -> list[str]:
    """--set overrides that run only the toy detector with these options."""
    sets = [f"annotators.{name}.enabled=false" for name in ("panoptic", "owod_yolo", "sgg", "ocr")]
    sets += ["annotators.owod.kind=tests.pipeline.toy_annotator:ToyDetector", "annotators.owod.tiny=false",
             "annotators.owod.enabled=true"]
    sets += [f"annotators.owod.options.{k}={v}" for k, v in options.items()]
    return sets

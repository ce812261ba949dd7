"""In-flight markers: which batch (and, after a crash, which image) a worker was annotating.

An image that kills its worker process (a segfault in a model) would kill every restarted actor Ray
hands its batch again. Before a batch runs, its stage writes a marker naming it; the marker is
removed when the batch returns. A marker still there means an attempt died mid-batch: the batch is
then run image by image, each image marked while it runs, and an image found marked was in flight
when a worker died, so it becomes an error row instead of running again.

The markers live under the output (`OUTPUT/_inflight/<run>/<stage>/`, through the same pyarrow
filesystem as the data), so every node of a cluster sees them and a crash-looping image is isolated
cluster-wide; readers skip `_` names, and the run removes its folder when it ends.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from enum import Enum

import pyarrow.fs as pafs

from schemas.image import filesystem_for

INFLIGHT_DIR = "_inflight"


class BatchState(Enum):
    NEW = "new"              # no attempt of this batch died
    CRASHED = "crashed"      # an attempt died with it in flight: run it image by image
    ISOLATED = "isolated"    # it completed image by image after crashes (a retry of its task skips them too)


@dataclass(frozen=True)
class BatchRecord:
    state: BatchState
    deaths: int = 0          # workers that died with this batch in flight

    def text(self) -> str:
        return f"{self.state.value} {self.deaths}"

    @classmethod
    def parse(cls, text: str) -> "BatchRecord":
        state, deaths = (text.split() + ["0"])[:2] if text.split() else ("new", "0")
        return cls(BatchState(state), int(deaths))


def run_folder(output: str, run_id: str) -> str:
    """The markers' folder of one run (a URI or path under the output)."""
    return f"{output.rstrip('/')}/{INFLIGHT_DIR}/{run_id}"


class Markers:
    """One stage's markers under `folder`, on whatever filesystem holds the output."""

    def __init__(self, folder: str):
        self.fs, self.root = filesystem_for(folder)
        self.fs.create_dir(self.root, recursive=True)

    def _path(self, kind: str, ids: list[str]) -> str:
        return f"{self.root}/{kind}-{hashlib.sha1(chr(0).join(ids).encode()).hexdigest()}"

    def _read(self, path: str) -> str | None:
        try:
            with self.fs.open_input_stream(path) as stream:
                return stream.read().decode()
        except (FileNotFoundError, OSError):
            return None

    def _write(self, path: str, text: str) -> None:
        with self.fs.open_output_stream(path) as stream:
            stream.write(text.encode())

    def _delete(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except (FileNotFoundError, OSError):
            pass

    def batch(self, ids: list[str]) -> BatchRecord | None:
        """The batch's record, or None when no attempt of it is under way or died."""
        text = self._read(self._path("batch", ids))
        return None if text is None else BatchRecord.parse(text)

    def set_batch(self, ids: list[str], record: BatchRecord) -> None:
        self._write(self._path("batch", ids), record.text())

    def clear_batch(self, ids: list[str]) -> None:
        self._delete(self._path("batch", ids))

    def image_in_flight(self, image_id: str) -> bool:
        return self._read(self._path("image", [image_id])) is not None

    def mark_image(self, image_id: str) -> None:
        self._write(self._path("image", [image_id]), str(os.getpid()))

    def clear_image(self, image_id: str) -> None:
        self._delete(self._path("image", [image_id]))


def remove_run_folder(output: str, run_id: str) -> None:
    fs, root = filesystem_for(run_folder(output, run_id))
    if fs.get_file_info(root).type == pafs.FileType.Directory:
        fs.delete_dir(root)

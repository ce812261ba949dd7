"""Write beside, then rename into place: a reader (another Ray worker, a resumed run) sees the old
file or folder or the new one, whole — never half of it. Every writer of shared files uses this.

    with replaced_atomically(folder) as tmp:      # tmp: an empty private folder beside `folder`
        save_file(..., tmp / "model.safetensors")
    with replaced_atomically(path, folder=False) as tmp:   # tmp: a path beside `path`
        save_file(..., tmp)
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replaced_atomically(target: str | os.PathLike, *, folder: bool = True, keep_existing: bool = False,
                        mode: int = 0o755) -> Iterator[Path]:
    """Yield a temporary path in `target`'s parent; on a clean exit it replaces `target` in one rename.

    keep_existing: concurrent builders of identical content (Ray workers preparing the same model) — the
        first to finish wins and the others' copies are dropped, instead of swapping a folder that a
        reader may be using. On error the temporary copy is removed and `target` stays as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        tmp.chmod(mode)  # mkdtemp makes it private; these folders are shared data
    else:
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(handle)
        tmp = Path(name)
        tmp.chmod(mode & 0o666)
    try:
        yield tmp
        if keep_existing:
            if not target.exists():
                try:
                    os.replace(tmp, target)
                except OSError:  # a concurrent builder renamed its copy in first
                    if not target.exists():
                        raise
        elif folder and target.exists():
            swap_folder(tmp, target)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def swap_folder(tmp: Path, target: Path) -> None:
    """Put the finished folder `tmp` where `target` is (os.replace cannot rename a folder over a
    non-empty one): the old one moves aside, the new one in, the old one is dropped."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    try:
        os.replace(target, old)
    except FileNotFoundError:  # removed meanwhile
        pass
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)

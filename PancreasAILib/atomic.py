"""Atomic writes: a reader never sees a half-written file or output folder.

Files are written under a temporary name in the same directory and renamed (atomic on POSIX);
output folders are assembled in a hidden sibling folder and renamed into place only when complete.
An existing, non-empty output folder is never replaced unless the caller asks for it explicitly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from PancreasAILib.errors import OutputExistsError


def write_file_atomically(path: Path, writer: Callable[[Path], None]) -> Path:
    """Call `writer(tmp_path)` and rename the result to `path`; the suffix is kept for format detection."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name.split('.')[0]}.", suffix=f".tmp{suffix}", dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; outputs get the user's usual mode
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomically(path: Path, text: str) -> Path:
    return write_file_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _is_nonempty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def check_output_dir(out_dir: Path, overwrite: bool) -> None:
    """Fail early, before any work, when results would land on an existing folder."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(
            f"The output path {out_dir} exists and is a file, not a folder.",
            "Choose another --out path.",
        )
    if _is_nonempty_dir(out_dir) and not overwrite:
        raise OutputExistsError(
            f"The output folder {out_dir} already exists and is not empty.",
            "Choose another --out folder, or pass --overwrite to replace its contents.",
        )


@contextlib.contextmanager
def atomic_output_dir(out_dir: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder; on success it replaces `out_dir` in one rename, on failure it is removed.

    With `overwrite`, the old folder is moved aside first and deleted only after the new one is in
    place, so a crash at any point leaves either the old or the new results, never a mixture.
    """
    out_dir = Path(out_dir).absolute()
    check_output_dir(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    backup: Path | None = None
    if out_dir.exists():
        if _is_nonempty_dir(out_dir):
            backup = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out_dir, backup)
        else:
            out_dir.rmdir()
    try:
        os.replace(staging, out_dir)
    except BaseException:
        if backup is not None:
            os.replace(backup, out_dir)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)

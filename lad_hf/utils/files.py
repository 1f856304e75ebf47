"""Outputs written atomically: a reader never sees a half-written file or folder, and a crash leaves the old one."""

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


__all__ = ["atomic_path", "write_json", "write_text"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` (same folder, same suffix) to write a file or a folder to. When the block ends
    it replaces `path` (a folder replaces a folder); when the block fails it is removed and `path` is left as it was.

    Example:
        ```python
        >>> with atomic_path("results.json") as tmp:
        ...     tmp.write_text(json.dumps(results))
        ```
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)  # os.replace does not replace a folder that holds files
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, payload, indent: int = 1) -> None:
    """Write `payload` as JSON to `path`, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=indent))


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path`, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)

"""Output folders and checkpoints that never lose work: a partial checkpoint is never resumed from, an unwritable
folder is found before training, and a failed write says why in words."""

import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging


__all__ = ["check_writable", "describe_write_error", "last_complete_checkpoint"]

logger = logging.get_logger(__name__)

TRAINER_STATE_NAME = "trainer_state.json"  # the Trainer writes it last into a checkpoint


def is_complete(checkpoint: str | os.PathLike) -> bool:
    """Whether a checkpoint folder was written to the end: its trainer state, written last, exists and parses."""
    try:
        json.loads((Path(checkpoint) / TRAINER_STATE_NAME).read_text())
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The latest `checkpoint-<step>` in `output_dir` that was written to the end. Incomplete ones (a run killed while
    writing one, or out of disk space) are removed, with a warning: they hold nothing a run can resume from."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    pattern = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
    checkpoints = sorted(
        (int(match.group(1)), path)
        for path in folder.iterdir()
        if path.is_dir() and (match := pattern.match(path.name))
    )
    for _, path in reversed(checkpoints):
        if is_complete(path):
            return str(path)
        logger.warning(f"{path} was not written to the end (no {TRAINER_STATE_NAME}): removed, resuming before it.")
        shutil.rmtree(path, ignore_errors=True)
    return None


def check_writable(folder: str | os.PathLike) -> None:
    """Create `folder` if needed and write a file in it, so that an unwritable output folder fails before training."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as error:
        raise ValueError(
            f"Cannot write to the output folder {os.path.abspath(folder)} ({describe_write_error(error, folder)}): "
            "choose a writable --output_dir."
        ) from None


def describe_write_error(error: BaseException, path: str | os.PathLike) -> str:
    """A failed write in words: "no space left on device" where the disk is full (torch's zip writer and safetensors
    say it obscurely), the error itself otherwise."""
    text = str(error)
    full = getattr(error, "errno", None) == errno.ENOSPC or "No space left" in text or "unexpected pos" in text
    if full:
        existing = Path(path)
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        free = shutil.disk_usage(existing).free / 2**20
        return f"no space left on device ({free:.0f} MB free where {path} is)"
    if getattr(error, "errno", None) == errno.EROFS:
        return "read-only file system"
    return text.splitlines()[0] if text.strip() else type(error).__name__

"""`python killed_run.py WHEN STEP ARGV...` runs `lad-hf train ARGV...` in one thread and kills itself with SIGKILL
at checkpoint STEP: `after` it is written, or `during` its write (half-way through the optimizer state). The
reliability tests resume what it leaves behind."""

import os
import signal
import sys

import torch
from transformers import Trainer

from lad_hf.cli import main


when, step, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
torch.set_num_threads(1)

if when == "after":
    save_checkpoint = Trainer._save_checkpoint

    def save_then_die(self, model, trial):
        save_checkpoint(self, model, trial)
        if self.state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)

    Trainer._save_checkpoint = save_then_die
else:
    torch_save = torch.save

    def die_half_way(obj, path, *args, **kwargs):
        if str(path).endswith(os.path.join(f"checkpoint-{step}", "optimizer.pt")):
            with open(path, "wb") as handle:
                handle.write(b"\0" * 64)  # a write cut short
            os.kill(os.getpid(), signal.SIGKILL)
        return torch_save(obj, path, *args, **kwargs)

    torch.save = die_half_way

sys.exit(main(["train", *argv]))

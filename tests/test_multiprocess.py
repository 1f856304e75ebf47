import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_metrics import free_port
from trainer_worker import datasets
from transformers import AutoModelForSemanticSegmentation

from lad_hf import LadTeacherConfig, LadTeacherTrainer, SegmentationConfig, SegmentationTrainer


@pytest.mark.parametrize("mode", ["teacher", "distill"])
def test_two_processes_train_in_step_and_evaluate_like_one(tmp_path: Path, mode: str):
    worker = str(Path(__file__).with_name("trainer_worker.py"))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    launcher += ["--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    run = subprocess.run(launcher + [worker, mode, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["weights"] == ranks[1]["weights"]  # DDP kept the trained weights identical
    if mode == "distill":
        assert all(r["teacher_before"] == r["teacher_after"] for r in ranks)  # the teacher never changed

    # The saved model, evaluated in this single process on the same eval set.
    _, val = datasets()
    model = AutoModelForSemanticSegmentation.from_pretrained(tmp_path / "model")
    settings = dict(output_dir=str(tmp_path / "single"), per_device_eval_batch_size=4, report_to="none", use_cpu=True)
    settings["seed"] = 0  # the teacher's evaluation noise comes from the run's seed
    if mode == "teacher":
        trainer = LadTeacherTrainer(model=model, args=LadTeacherConfig(**settings))
    else:
        trainer = SegmentationTrainer(model=model, args=SegmentationConfig(**settings))
    single = trainer.evaluate(val)
    assert single["eval_mean_iou"] == pytest.approx(ranks[0]["metrics"]["eval_mean_iou"], rel=1e-9)
    if mode == "teacher":
        assert single["eval_mean_iou_zero_label"] == pytest.approx(
            ranks[0]["metrics"]["eval_mean_iou_zero_label"], rel=1e-9
        )


def test_cirkd_memory_holds_the_regions_of_every_process(tmp_path: Path):
    worker = str(Path(__file__).with_name("trainer_worker.py"))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    launcher += ["--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    run = subprocess.run(launcher + [worker, "cirkd", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks[0]["weights"] == ranks[1]["weights"]
    # Both processes hold the same memory, filled with the regions of both (the queues are long: no wrap).
    assert ranks[0]["memory"] == ranks[1]["memory"]
    assert ranks[0]["projection"] == ranks[1]["projection"]  # its gradients averaged like the student's
    assert sum(ranks[0]["region_pointer"]) == ranks[0]["regions_seen"] + ranks[1]["regions_seen"]
    assert ranks[0]["regions_seen"] > 0 and ranks[1]["regions_seen"] > 0


def test_processes_that_would_train_alone_are_refused(tmp_path: Path):
    # On a machine without GPUs, TrainingArguments without use_cpu=True ignores the launcher's processes.
    script = f"from lad_hf import SegmentationConfig; SegmentationConfig(output_dir={str(tmp_path)!r})"
    run = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, "WORLD_SIZE": "2"}, capture_output=True, text=True
    )
    assert run.returncode != 0
    assert "pass use_cpu=True" in run.stderr

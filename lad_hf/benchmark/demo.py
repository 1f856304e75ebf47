"""`lad-hf demo`: LAD against its baselines on the built-in digit-scenes benchmark, end to end on a CPU (or a GPU
where torch sees one).

The regime is the paper's: every model starts from pretrained weights (the benchmark's "ImageNet": ResNets
pretrained on single digits of the train pool, `lad_hf.benchmark.pretraining`), the teachers are trained to
convergence (a longer budget than the students and early stopping on validation mIoU, keeping their best
checkpoint), and the students train for a budget at which the student alone has converged. One student
architecture, and for each seed:

1. `student`: the student alone (cross-entropy);
2. `lad_teacher`: a LAD teacher of the student's architecture, reading the noised label, dual-path trained;
3. `student_lad`: the student distilled from (2) with CWD;
4. `self_teacher`: the student's architecture trained on the image alone exactly as (2) is trained (same budget,
   early stopping), and 5. `student_self`: the student distilled from it, the control that separates LAD's gain
   from what any same-size teacher gives;
6. `big_teacher`: a wider image-only model trained as (2), and 7. `student_big`: the student distilled from it.

Every run writes its model and a `run_result.json` to `<output_dir>/seed-<s>/<run>/`; a demo started again skips the
runs that finished, so a crashed demo resumes. The summary (`results.md`, `results.json`, `predictions.png`,
`curves.png`) is written atomically at the end.
"""

import math
import os
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers.utils import logging

from ..data import load_segmentation_dataset
from ..utils.files import write_json, write_text
from .digit_scenes import build_digit_scenes
from .report import plot_curves, plot_predictions, summarise
from .runs import DemoRun, make_job, pretrain_backbones, run_jobs
from .settings import DEMO_RUNS, METHOD_RUNS, RUNS, DemoSettings


__all__ = ["check_settings", "ensure_digit_scenes", "run_demo"]

logger = logging.get_logger(__name__)


def check_settings(settings: DemoSettings, seeds, methods=()) -> None:
    """Refuse impossible options before any work."""
    if settings.budget <= 0 or not math.isfinite(settings.budget):
        raise ValueError(f"budget must be a positive number (1.0 = the default budget), got {settings.budget}.")
    if not seeds:
        raise ValueError("seeds must name at least one seed.")
    if settings.train_size is not None and settings.train_size < settings.batch_size:
        raise ValueError(
            f"train_size must hold at least one batch ({settings.batch_size}), got {settings.train_size}."
        )
    unknown = [m for m in methods if m not in METHOD_RUNS]
    if unknown:
        raise ValueError(f"Unknown methods {unknown}; the demo adds {sorted(METHOD_RUNS)}.")
    if torch.cuda.device_count() > 1:
        # The Trainer would split each batch over them (DataParallel): another batch size than the settings say.
        raise ValueError(
            f"{torch.cuda.device_count()} GPUs are visible; every run of the demo and the study trains on one "
            "device (its --workers share it): choose one with CUDA_VISIBLE_DEVICES=0."
        )


def ensure_digit_scenes(data_dir: Path, train_sizes: tuple[int | None, ...] = ()) -> Path:
    """Build the benchmark in `data_dir` if missing; refuse training-set sizes beyond its train split."""
    if not (data_dir / "build_info.json").exists():
        logger.warning(f"Building the digit-scenes benchmark in {data_dir}")
        build_digit_scenes(data_dir)
    available = len(load_segmentation_dataset(data_dir, "train"))
    too_big = [size for size in train_sizes if size is not None and size > available]
    if too_big:
        raise ValueError(
            f"train_size {too_big[0]} exceeds the {available} training scenes of {data_dir}: ask for at most "
            f"{available}."
        )
    return data_dir


def run_demo(
    output_dir: str | os.PathLike = "lad-demo",
    seeds: tuple[int, ...] = (0, 1, 2),
    budget: float = 1.0,
    data_dir: str | os.PathLike | None = None,
    settings: DemoSettings | None = None,
    show_progress: bool = True,
    methods: tuple[str, ...] = (),
    pretrained: bool = True,
    workers: int = 2,
) -> dict:
    """Build the digit-scenes benchmark if missing, pretrain the backbones (unless `pretrained=False`), train and
    test the demo's runs for each seed (`workers` at a time), and write the summary to `output_dir`. Returns the
    JSON summary."""
    settings = replace(settings or DemoSettings(), budget=budget, pretrained=pretrained)
    check_settings(settings, seeds, methods)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}.")
    start = time.perf_counter()
    runs = RUNS + tuple(METHOD_RUNS[m] for m in methods)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data_dir) if data_dir is not None else output_dir / "digit_scenes"
    ensure_digit_scenes(data_dir, (settings.train_size,))
    backbones = pretrain_backbones(output_dir / "pretrained", settings, show_progress) if pretrained else None
    # The longest runs first, then the students alone, then the students that need a teacher.
    order = {"lad_teacher": 0, "big_teacher": 1, "self_teacher": 2}
    jobs = [
        make_job(name, seed, settings)
        for name in sorted(runs, key=lambda name: order.get(name, 3 if DEMO_RUNS[name].teacher is None else 4))
        for seed in seeds
    ]
    finished = run_jobs(jobs, output_dir, data_dir, backbones, workers, show_progress)
    results = {seed: {name: finished[make_job(name, seed, settings)] for name in runs} for seed in seeds}
    table, summary = summarise(results, settings, backbones, workers)
    job = make_job("student", seeds[0], settings)
    first = DemoRun(
        data_dir, output_dir / job.out_dir, seeds[0], settings, False, backbones, output_dir / job.teacher_dir
    )
    plot_predictions(output_dir / "predictions.png", first.predictions(names=runs), runs, first.id2label)
    plot_curves(output_dir / "curves.png", results[seeds[0]])
    summary["wall_seconds_this_call"] = round(time.perf_counter() - start, 1)
    write_json(output_dir / "results.json", summary)
    write_text(output_dir / "results.md", "# lad-hf demo\n\n" + table)
    print(table)
    return summary

"""Training the demo's runs: the datasets and models of one seed (`DemoRun`), the pretrained backbones, and the jobs
that run them side by side in worker processes (shared with the study)."""

import json
import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import AutoModelForSemanticSegmentation, EarlyStoppingCallback, PrinterCallback, ResNetConfig
from transformers.utils import logging

from ..data import SegmentationCollator, SegmentationTransforms, load_segmentation_dataset
from ..label_channel import LabelNoiser, add_label_channel, build_teacher_inputs
from ..metrics import SegmentationMetric
from ..models import LadSegConfig, LadSegForSemanticSegmentation
from ..trainers import (
    DistillationConfig,
    DistillationTrainer,
    LadTeacherConfig,
    LadTeacherTrainer,
    SegmentationConfig,
    SegmentationTrainer,
    SelfDistillationConfig,
    SelfDistillationTrainer,
)
from ..utils.files import write_json
from .pretraining import RESULTS_FILE, pretrain_digit_backbone
from .settings import DEMO_RUNS, RUN_RESULT_FILE, RUNS, TEACHERS, DemoSettings


__all__ = [
    "DemoRun",
    "Job",
    "arm_name",
    "finished_backbones",
    "finished_result",
    "image_miou",
    "make_job",
    "pretrain_backbones",
    "run_jobs",
    "segmenter_config",
    "threads_per_run",
    "training_device",
]

logger = logging.get_logger(__name__)


def segmenter_config(
    widths: list[int],
    depths: list[int],
    decode_channels: int,
    id2label: dict,
    pretrained_backbone: str | os.PathLike | None = None,
) -> LadSegConfig:
    """A DeepLabV3 over a small ResNet (output stride 8), the demo's models; with `pretrained_backbone`, a folder
    written by `pretrain_digit_backbone`, its weights are loaded as a user loads `microsoft/resnet-18`."""
    if pretrained_backbone is None:
        backbone = ResNetConfig(embedding_size=widths[0], hidden_sizes=widths, depths=depths, layer_type="basic")
    else:
        backbone = os.fspath(pretrained_backbone)
    config = LadSegConfig(
        backbone=backbone,
        use_pretrained_backbone=pretrained_backbone is not None,
        decode_head="aspp",
        aspp_rates=[2, 4, 6],
        decode_channels=decode_channels,
        id2label=id2label,
        label2id={name: k for k, name in id2label.items()},
    )
    if list(config.backbone_config.hidden_sizes) != list(widths) or list(config.backbone_config.depths) != depths:
        raise ValueError(
            f"The pretrained backbone in {pretrained_backbone} has widths {config.backbone_config.hidden_sizes} "
            f"and depths {config.backbone_config.depths}, the settings ask for {widths} and {depths}."
        )
    return config


def pretrain_backbones(out_dir: Path, settings: DemoSettings, show_progress: bool = True) -> dict[str, dict]:
    """The student's and the big teacher's backbones pretrained on single digits of the train pool (shared by all
    seeds and runs, as one ImageNet checkpoint is in the paper): `{"student": results, "big": results}`, each with
    its `path`. A finished pretraining is reused."""
    pretrained = {}
    for kind, widths, depths in (
        ("student", settings.student_widths, settings.student_depths),
        ("big", settings.big_widths, settings.big_depths),
    ):
        path = out_dir / kind
        if not (path / "pretrain_results.json").exists():
            logger.warning(f"Pretraining the {kind} backbone on single digits of the train pool, in {path}")
        backbone = ResNetConfig(embedding_size=widths[0], hidden_sizes=widths, depths=depths, layer_type="basic")
        results = pretrain_digit_backbone(
            backbone,
            path,
            steps=settings.scaled(settings.pretrain_steps),
            batch_size=settings.pretrain_batch_size,
            image_size=settings.pretrain_image_size,
            learning_rate=settings.learning_rate,
            show_progress=show_progress,
        )
        pretrained[kind] = _backbone_entry(path, results)
    return pretrained


def _backbone_entry(path: Path, results: dict) -> dict:
    """A pretrained backbone as the runs take it: its `path` and its results, without the training log."""
    return {"path": str(path), **{k: v for k, v in results.items() if k != "log_history"}}


def finished_backbones(out_dir: Path) -> dict[str, dict] | None:
    """The backbones `pretrain_backbones` finished in `out_dir`, without pretraining any; None if there are none."""
    found = {
        kind: _backbone_entry(out_dir / kind, json.loads((out_dir / kind / RESULTS_FILE).read_text()))
        for kind in ("student", "big")
        if (out_dir / kind / RESULTS_FILE).exists()
    }
    return found or None


class DemoRun:
    """One seed of the demo: the datasets, the runs, and their results.

    Args:
        data_dir: The digit-scenes folder.
        out_dir: Where the runs go (`<out_dir>/<run>/`).
        seed: Seed of the weights, the augmentation and the noise.
        settings: Models and budgets.
        show_progress: The Trainer's progress bars.
        pretrained: `pretrain_backbones`'s result, when `settings.pretrained`.
        teacher_dir: Where the teachers are (default `out_dir`): several student budgets can share them.
    """

    def __init__(
        self,
        data_dir: Path,
        out_dir: Path,
        seed: int,
        settings: DemoSettings,
        show_progress: bool = True,
        pretrained: dict[str, dict] | None = None,
        teacher_dir: Path | None = None,
    ):
        self.out_dir, self.seed, self.settings, self.show_progress = out_dir, seed, settings, show_progress
        self.teacher_dir = teacher_dir or out_dir
        if settings.pretrained and pretrained is None:
            raise ValueError("settings.pretrained needs the pretrained backbones (pretrain_backbones).")
        self.pretrained = pretrained if settings.pretrained else None
        size = (settings.image_size, settings.image_size)
        train_transform = SegmentationTransforms(size, scale_range=settings.scale_range, seed=seed)
        eval_transform = self.eval_transform = SegmentationTransforms(size, train=False)
        self.train = load_segmentation_dataset(data_dir, "train", transform=train_transform)
        if settings.train_size is not None:
            if settings.train_size > len(self.train):
                raise ValueError(f"train_size {settings.train_size} exceeds the {len(self.train)} training scenes.")
            self.train = self.train.select(range(settings.train_size))
        self.validation = load_segmentation_dataset(data_dir, "validation", transform=eval_transform)
        self.test = load_segmentation_dataset(data_dir, "test", transform=eval_transform)
        self.id2label = json.loads((data_dir / "id2label.json").read_text())
        self.id2label = {int(k): v for k, v in self.id2label.items()}

    def run_dir(self, name: str) -> Path:
        return (self.teacher_dir if name in TEACHERS else self.out_dir) / name

    def args(self, config_class, name: str, **overrides):
        s = self.settings
        teacher = name in TEACHERS
        steps = s.scaled(s.teacher_steps if teacher else s.student_steps)
        if teacher:
            # Converged teachers: the best validation checkpoint of a longer run that stops when it stops improving.
            overrides = {
                "save_strategy": "steps",
                "save_steps": s.eval_steps,
                "save_total_limit": 1,
                "load_best_model_at_end": True,
                "metric_for_best_model": "mean_iou",
                "greater_is_better": True,
                **overrides,
            }
        else:
            overrides = {"save_strategy": "no", **overrides}
        return config_class(
            output_dir=str(self.run_dir(name) / "trainer"),
            max_steps=steps,
            per_device_train_batch_size=s.batch_size,
            per_device_eval_batch_size=s.eval_batch_size,
            learning_rate=s.learning_rate,
            weight_decay=s.weight_decay,
            lr_scheduler_type="polynomial",
            lr_scheduler_kwargs={"power": s.lr_power, "lr_end": 0.0},
            warmup_steps=min(s.warmup_steps, steps // 10),
            logging_steps=s.eval_steps,
            eval_strategy="steps",
            eval_steps=s.eval_steps,
            report_to="none",
            use_cpu=not torch.cuda.is_available(),  # a GPU when there is one, as the Trainer's default
            seed=self.seed,
            data_seed=self.seed,
            dataloader_num_workers=0,
            disable_tqdm=not self.show_progress,
            channels_last=s.channels_last,
            **overrides,
        )

    def model(self, big: bool = False) -> LadSegForSemanticSegmentation:
        s = self.settings
        widths, depths = (s.big_widths, s.big_depths) if big else (s.student_widths, s.student_depths)
        backbone = self.pretrained["big" if big else "student"]["path"] if self.pretrained else None
        torch.manual_seed(self.seed)
        config = segmenter_config(widths, depths, s.decode_channels, self.id2label, backbone)
        return LadSegForSemanticSegmentation(config)

    def trainer(self, name: str) -> SegmentationTrainer:
        s, run = self.settings, DEMO_RUNS[name]
        common = dict(train_dataset=self.train, eval_dataset=self.validation, data_collator=SegmentationCollator())
        if name in TEACHERS:
            common["callbacks"] = [EarlyStoppingCallback(early_stopping_patience=s.early_stopping_patience)]
        if run.trainer == "supervised":
            model = self.model(big=run.big)
            return SegmentationTrainer(model=model, args=self.args(SegmentationConfig, name), **common)
        if run.trainer == "lad_teacher":
            args = self.args(
                LadTeacherConfig, name, consistency_weight=s.consistency_weight, consistency_loss=s.consistency_loss
            )
            noiser = LabelNoiser(len(self.id2label), alpha=s.label_noise_alpha, class_noise=s.label_class_noise)
            model = add_label_channel(self.model(), noiser, s.label_stem_channels)
            return LadTeacherTrainer(model=model, args=args, **common)
        if run.trainer == "sdes":
            args = self.args(SelfDistillationConfig, name, sdes_temperature=s.kd_temperature)
            return SelfDistillationTrainer(model=self.model(), args=args, **common)
        teacher = AutoModelForSemanticSegmentation.from_pretrained(self.run_dir(run.teacher) / "model")
        kd = dict(kd_weight=s.kd_weight, kd_temperature=s.kd_temperature)
        if run.own_weights:  # the comparison methods: their code's weights
            kd = dict(maskd_mask_steps=s.scaled(s.maskd_mask_steps))
        args = self.args(DistillationConfig, name, kd_loss=run.kd_loss, **kd)
        return DistillationTrainer(model=self.model(), teacher_model=teacher, args=args, **common)

    def run(self, name: str) -> dict:
        """Train and test one run, or read its result if an earlier demo finished it."""
        run_dir = self.run_dir(name)
        result = finished_result(run_dir, name, self.settings)
        if result is not None:
            logger.warning(f"{name} (seed {self.seed}): finished earlier, reusing {run_dir}")
            return result
        s = self.settings
        steps = s.scaled(s.teacher_steps if name in TEACHERS else s.student_steps)
        logger.warning(f"{name} (seed {self.seed}): {DEMO_RUNS[name].title}, up to {steps} steps, in {run_dir}")
        shutil.rmtree(run_dir / "trainer", ignore_errors=True)  # checkpoints of an interrupted run
        trainer = self.trainer(name)
        if not self.show_progress:
            trainer.remove_callback(PrinterCallback)  # no log dicts on the console either
        start = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - start
        if name == "lad_teacher":
            trainer.args.eval_stability = True  # the paper's Table 8 stability, on the test split only
        metrics = trainer.evaluate(self.test, metric_key_prefix="test")
        trainer.save_model(str(run_dir / "model"))
        shutil.rmtree(run_dir / "trainer", ignore_errors=True)  # checkpoints: the model is saved
        result = {
            "run": name,
            "seed": self.seed,
            "steps": trainer.state.global_step,
            "best_step": _best_step(trainer.state) if name in TEACHERS else trainer.state.global_step,
            "train_seconds": round(train_seconds, 1),
            "device": training_device(),
            "parameters": trainer.model.num_parameters(),
            "test": {k.removeprefix("test_"): v for k, v in metrics.items()},
            "log_history": trainer.state.log_history,
            "settings": self.settings.fingerprint(teacher=name in TEACHERS),
        }
        write_json(run_dir / RUN_RESULT_FILE, result)
        return result

    @torch.no_grad()
    def predictions(self, count: int = 4, names: tuple[str, ...] = RUNS) -> list[dict[str, np.ndarray]]:
        """Image, label, the LAD teacher's noised label, and the prediction of every run in `names` (the LAD teacher
        among them) on the first test scenes; `miou` holds each run's mIoU on each scene."""
        batch = SegmentationCollator()([self.test[i] for i in range(count)])
        models = {
            name: AutoModelForSemanticSegmentation.from_pretrained(self.run_dir(name) / "model").eval()
            for name in names
        }
        noiser = LabelNoiser.from_config(models["lad_teacher"].config)
        generator = torch.Generator().manual_seed(self.seed)
        teacher_inputs = build_teacher_inputs(batch["pixel_values"], batch["labels"], noiser, generator=generator)
        size = batch["labels"].shape[-2:]
        outputs = {}
        for name, model in models.items():
            inputs = teacher_inputs if name == "lad_teacher" else batch["pixel_values"]
            logits = torch.nn.functional.interpolate(model(pixel_values=inputs).logits, size=size, mode="bilinear")
            outputs[name] = logits.argmax(1).numpy()
        mean = torch.tensor(self.eval_transform.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.eval_transform.image_std).view(1, 3, 1, 1)
        images = ((batch["pixel_values"] * std + mean).clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).numpy()
        labels = batch["labels"].numpy()
        return [
            {
                "image": images[i],
                "label": labels[i],
                "noised_label": teacher_inputs[i, -1].numpy(),
                **{name: outputs[name][i] for name in models},
                "miou": {name: image_miou(outputs[name][i], labels[i], len(self.id2label)) for name in models},
            }
            for i in range(count)
        ]


def image_miou(prediction: np.ndarray, label: np.ndarray, num_labels: int, ignore_index: int = 255) -> float:
    """mIoU on one image, over the classes in its label or its prediction (ignore pixels left out)."""
    metric = SegmentationMetric(num_labels, ignore_index=ignore_index)
    metric.update(prediction[None], label[None])
    return float(metric.compute()["mean_iou"])


@dataclass(frozen=True)
class Job:
    """One run: `DemoRun(root / out_dir, teacher_dir=root / teacher_dir).run(name)` with `settings` (a
    `DemoSettings` as a dict). Where it is written identifies it; `tags` say where it belongs in a summary."""

    out_dir: str
    teacher_dir: str
    name: str
    seed: int
    settings: dict = field(hash=False, compare=False)
    tags: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def needs(self) -> "Job | None":
        """The teacher's job, for a distilled student."""
        teacher = DEMO_RUNS[self.name].teacher
        if teacher is None:
            return None
        return Job(self.teacher_dir, self.teacher_dir, teacher, self.seed, {})

    def describe(self) -> str:
        return f"{self.out_dir}/{self.name}"


def arm_name(settings: DemoSettings) -> str:
    """`pretrained-n1000`, `scratch-n4000` ...: the start and the training-set size."""
    return f"{'pretrained' if settings.pretrained else 'scratch'}-n{settings.train_size or 'all'}"


def make_job(name: str, seed: int, settings: DemoSettings, group: str | None = None, **tags) -> Job:
    """The job of run `name`: teachers in `<group>/teachers`, students in `<group>/steps-<student steps>`, with
    `group` `<arm>/seed-<seed>` by default. The demo and the study share this layout, so a study run in the demo's
    folder reuses the demo's runs."""
    group = group or f"{arm_name(settings)}/seed-{seed}"
    teachers = f"{group}/teachers"
    out_dir = teachers if name in TEACHERS else f"{group}/steps-{settings.scaled(settings.student_steps)}"
    return Job(out_dir, teachers, name, seed, asdict(settings), tags)


def finished_result(run_dir: Path, name: str, settings: DemoSettings) -> dict | None:
    """The `run_result.json` of run `name` in `run_dir` if it finished, None if not; an error if it was trained
    with other settings."""
    path = Path(run_dir) / RUN_RESULT_FILE
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    changed = settings.changed(result["settings"], teacher=name in TEACHERS)
    if changed:
        raise ValueError(
            f"{run_dir} holds a run trained with other settings (they differ in {changed}): use another output "
            "folder, or remove that one."
        )
    return result


def run_job(job: Job, root: str, data_dir: str, pretrained: dict | None, show_progress: bool = False) -> dict:
    """Run (or reuse) one job in this process; returns its `run_result.json`."""
    settings = DemoSettings(**job.settings)
    out_dir, teacher_dir = Path(root) / job.out_dir, Path(root) / job.teacher_dir
    demo = DemoRun(Path(data_dir), out_dir, job.seed, settings, show_progress, pretrained, teacher_dir=teacher_dir)
    return demo.run(job.name)


def training_device() -> str:
    """Where this process trains: `"cpu"`, or the GPU's name."""
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def threads_per_run(workers: int) -> int:
    """The torch threads each run gets: this process's (`OMP_NUM_THREADS`, or the cores) shared among `workers`."""
    return torch.get_num_threads() if workers == 1 else max(1, torch.get_num_threads() // workers)


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    # Two processes' bars would overwrite each other: the main process logs each finished run instead.
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    datasets.disable_progress_bars()


def run_jobs(
    jobs: list[Job], root: Path, data_dir: Path, pretrained: dict | None, workers: int, show_progress: bool = True
) -> dict[Job, dict]:
    """Run jobs, a student only once its teacher has finished, earlier jobs first, `workers` at a time.

    With several workers each run is a process of its own with `threads / workers` torch threads: on a small CPU
    two single-thread runs side by side train more steps per second than one run on both threads. With one worker
    the runs go one after the other in this process, with the Trainer's progress bars. Every finished run is logged.
    """
    results: dict[Job, dict] = {}
    planned, pending = set(jobs), list(jobs)
    total, start = len(jobs), time.perf_counter()

    def ready() -> list[Job]:
        return [job for job in pending if job.needs is None or job.needs in results or job.needs not in planned]

    def finished(job: Job, result: dict) -> None:
        results[job] = result
        logger.warning(
            f"[{len(results)}/{total}, {(time.perf_counter() - start) / 60:.1f} min] {job.describe()} (seed "
            f"{job.seed}): test mIoU {100 * result['test']['mean_iou']:.1f}, {result['steps']} steps"
        )

    if workers == 1:
        while pending:
            job = ready()[0]
            pending.remove(job)
            finished(job, run_job(job, str(root), str(data_dir), pretrained, show_progress))
        return results
    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(threads_per_run(workers),)
    ) as pool:
        running = {}
        while pending or running:
            for job in ready()[: workers - len(running)]:
                pending.remove(job)
                running[pool.submit(run_job, job, str(root), str(data_dir), pretrained)] = job
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                finished(running.pop(future), future.result())
    return results


def _best_step(state) -> int:
    """The step of the checkpoint the Trainer kept as best (`checkpoint-<step>`)."""
    if state.best_model_checkpoint is None:
        return state.global_step
    return int(Path(state.best_model_checkpoint).name.rpartition("-")[2])

"""`lad-hf demo`: LAD against its baselines on the built-in digit-scenes benchmark, end to end on a CPU (or a GPU
where torch sees one).

The regime is the paper's: every model starts from pretrained weights (the benchmark's "ImageNet": ResNets
pretrained on single digits of the train pool, `lad_hf.pretraining`), the teachers are trained to convergence (a
longer budget than the students and early stopping on validation mIoU, keeping their best checkpoint), and the
students train for a budget at which the student alone has converged. One student architecture, and for each seed:

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

import json
import math
import os
import shutil
import statistics
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import AutoModelForSemanticSegmentation, EarlyStoppingCallback, PrinterCallback, ResNetConfig
from transformers.utils import logging

from .configuration_lad_seg import LadSegConfig
from .data import SegmentationCollator, SegmentationTransforms, build_digit_scenes, load_segmentation_dataset
from .distillation_config import KD_LOSSES, DistillationConfig
from .distillation_trainer import DistillationTrainer
from .files import atomic_path, write_json, write_text
from .label_channel import add_label_channel, build_teacher_inputs
from .lad_teacher_config import LadTeacherConfig
from .lad_teacher_trainer import LadTeacherTrainer
from .metrics import SegmentationMetric
from .modeling_lad_seg import LadSegForSemanticSegmentation
from .noising import LabelNoiser
from .pretraining import RESULTS_FILE, pretrain_digit_backbone
from .segmentation_config import SegmentationConfig
from .segmentation_trainer import SegmentationTrainer
from .self_distillation_config import SelfDistillationConfig
from .self_distillation_trainer import SelfDistillationTrainer
from .visualization import class_palette, overlay


__all__ = ["DEMO_RUNS", "DemoSettings", "RUNS", "RunSpec", "run_demo"]

logger = logging.get_logger(__name__)


@dataclass(frozen=True)
class RunSpec:
    """One run of the demo's table.

    Args:
        title: Its row in the table.
        short_title: Its name in the figures.
        trainer: `"supervised"` (cross-entropy alone), `"lad_teacher"` (dual path, reading the noised label),
            `"distill"` (from `teacher`, with `kd_loss`) or `"sdes"` (self-distillation).
        big: The wider model (the big teacher) instead of the student's architecture.
        teacher: The run it is distilled from.
        kd_loss: Its `DistillationConfig.kd_loss`.
        method: The `--methods` name that adds it; `None` for the demo's own runs.
    """

    title: str
    short_title: str
    trainer: str = "supervised"
    big: bool = False
    teacher: str | None = None
    kd_loss: str = "cwd"
    method: str | None = None


DEMO_RUNS = {
    "student": RunSpec("(1) student alone", "(1) student alone"),
    "lad_teacher": RunSpec(
        "(2) LAD teacher (same architecture + label channel)", "(2) LAD teacher", trainer="lad_teacher"
    ),
    "student_lad": RunSpec(
        "(3) student distilled from (2), CWD", "(3) student from LAD teacher", "distill", teacher="lad_teacher"
    ),
    "self_teacher": RunSpec("(4) same-size image-only teacher", "(4) same-size teacher"),
    "student_self": RunSpec(
        "(5) control: student distilled from (4), CWD", "(5) student from (4)", "distill", teacher="self_teacher"
    ),
    "big_teacher": RunSpec("(6) big image-only teacher", "(6) big teacher", big=True),
    "student_big": RunSpec(
        "(7) student distilled from (6), CWD", "(7) student from big teacher", "distill", teacher="big_teacher"
    ),
    # More methods on the same student and budget (`lad-hf demo --methods ...`), after the runs above.
    "student_fakd": RunSpec(
        "FAKD: student distilled from (6), FAKD-CWD",
        "FAKD from (6)",
        "distill",
        teacher="big_teacher",
        kd_loss="fakd_cwd",
        method="fakd",
    ),
    "student_lad_fakd": RunSpec(
        "LAD + FAKD: student distilled from (2), FAKD-CWD",
        "LAD + FAKD",
        "distill",
        teacher="lad_teacher",
        kd_loss="fakd_cwd",
        method="lad_fakd",
    ),
    "student_sdes": RunSpec(
        "SDES: student self-distilled with expert decoders", "SDES", trainer="sdes", method="sdes"
    ),
    # The paper's comparison methods (Table 1), from the big teacher as the paper's from its R101, with their code's
    # weights.
    **{
        f"student_{method}": RunSpec(
            f"{title}: student distilled from (6)",
            f"{title} from (6)",
            "distill",
            teacher="big_teacher",
            kd_loss=method,
            method=method,
        )
        for method, title in (("skd", "SKD"), ("ifvd", "IFVD"), ("cirkd", "CIRKD"), ("maskd", "MasKD"))
    },
}
RUNS = tuple(name for name, run in DEMO_RUNS.items() if run.method is None)
METHOD_RUNS = {run.method: name for name, run in DEMO_RUNS.items() if run.method is not None}
# The runs others learn from: trained to convergence (a longer budget, early stopping, best checkpoint).
TEACHERS = tuple(dict.fromkeys(run.teacher for run in DEMO_RUNS.values() if run.teacher is not None))
RUN_RESULT_FILE = "run_result.json"  # in each run's folder, written as the run finishes
SHORT_TITLES = {name: run.short_title for name, run in DEMO_RUNS.items()}


@dataclass
class DemoSettings:
    """The demo's models and budgets. `budget` scales every number of steps (pretraining included)."""

    student_steps: int = 2400
    teacher_steps: int = 4800
    early_stopping_patience: int = 4
    eval_every: int = 300
    budget: float = 1.0
    batch_size: int = 16
    learning_rate: float = 3e-3
    weight_decay: float = 0.01
    lr_power: float = 0.9  # polynomial decay to 0
    warmup_steps: int = 50  # at most a tenth of the run
    image_size: int = 64
    scale_range: tuple[float, float] = (0.8, 1.25)
    train_size: int | None = 1000
    pretrained: bool = True
    pretrain_steps: int = 1500
    pretrain_batch_size: int = 64
    pretrain_image_size: int = 48
    student_widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    student_depths: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    big_widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    big_depths: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    decode_channels: int = 64
    label_stem_channels: int = 8
    label_noise_alpha: float = 0.01
    label_class_noise: bool = True
    consistency_weight: float = 1.0
    consistency_loss: str = "cwd"
    kd_weight: float = 3.0
    kd_temperature: float = 4.0
    # MasKD's first stage: a quarter of the students' budget, as its code's 10,000 steps to its students' 40,000.
    maskd_mask_steps: int = 600
    eval_batch_size: int = 50
    channels_last: bool = True

    def scaled(self, steps: int) -> int:
        return max(1, round(steps * self.budget))

    @property
    def eval_steps(self) -> int:
        """Steps between validations (curves, and the teachers' early stopping)."""
        return self.scaled(self.eval_every)

    def fingerprint(self, teacher: bool) -> dict:
        """What a run's result depends on: all settings, but the students' budget for a teacher (several student
        budgets share the teachers)."""
        settings = asdict(self)
        if teacher:
            settings.pop("student_steps")
        return json.loads(json.dumps(settings))

    def changed(self, recorded: dict, teacher: bool) -> list[str]:
        """The settings in which a finished run's `recorded` fingerprint differs from these. A setting it does not
        record was added to the demo after that run, which trained with its default."""
        fingerprint, defaults = self.fingerprint(teacher), DemoSettings().fingerprint(teacher)
        return sorted(key for key, value in fingerprint.items() if recorded.get(key, defaults[key]) != value)


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
        if KD_LOSSES[run.kd_loss].objective is not None:  # the comparison methods: their code's weights
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


def mean_std(values: list[float], scale: float = 100.0, signed: bool = False) -> str:
    """`"m"` for one value, `"m ± s"` (sample std) for several, in percent by default."""
    sign = "+" if signed else ""
    if len(values) == 1:
        return f"{scale * values[0]:{sign}.1f}"
    return f"{scale * statistics.mean(values):{sign}.1f} ± {scale * statistics.stdev(values):.1f}"


def summarise(
    results: dict[int, dict[str, dict]], settings: DemoSettings, pretrained: dict | None, workers: int = 1
) -> tuple[str, dict]:
    """The markdown table and the JSON summary over seeds."""
    seeds = sorted(results)
    runs = list(results[seeds[0]])
    alone = [results[seed]["student"]["test"]["mean_iou"] for seed in seeds]
    rows = [
        "| run | test mIoU (%) | vs (1), same seed | mean accuracy (%) | steps (best) | train time (s) | parameters |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    summary = {
        "settings": asdict(settings),
        "seeds": seeds,
        "pretrained": pretrained,
        "workers": workers,
        "torch_threads_per_run": threads_per_run(workers),
        "runs": {},
    }
    for name in runs:
        per_seed = [results[seed][name] for seed in seeds]
        miou = [r["test"]["mean_iou"] for r in per_seed]
        accuracy = [r["test"]["mean_accuracy"] for r in per_seed]
        seconds = [r["train_seconds"] for r in per_seed]
        best = [r.get("best_step", r["steps"]) for r in per_seed]
        gain = [m - a for m, a in zip(miou, alone, strict=True)]
        paired = mean_std(gain, signed=True) if name.startswith("student_") else ""
        rows.append(
            f"| {DEMO_RUNS[name].title} | {mean_std(miou)} | {paired} | {mean_std(accuracy)} | "
            f"{statistics.mean(best):.0f} | {statistics.mean(seconds):.0f} | {per_seed[0]['parameters'] / 1e6:.2f}M |"
        )
        summary["runs"][name] = {
            "mean_iou": miou,
            "mean_accuracy": accuracy,
            "gain_over_student": gain,
            "best_step": best,
            "train_seconds": seconds,
        }
    teacher = [results[seed]["lad_teacher"]["test"] for seed in seeds]
    reliance = {
        key: [t[key] for t in teacher]
        for key in ("mean_iou", "mean_iou_shuffled_label", "mean_iou_zero_label")
        if all(key in t for t in teacher)
    }
    summary["lad_teacher_label_reliance"] = reliance
    start = "digit-pretrained backbones" if settings.pretrained else "scratch"
    lines = [
        f"Digit scenes, test split; models from {start}; students {settings.scaled(settings.student_steps)} steps, "
        f"teachers up to {settings.scaled(settings.teacher_steps)} steps with early stopping (best validation "
        f"checkpoint), batch {settings.batch_size} at {settings.image_size}x{settings.image_size}; "
        f"seeds {seeds} (mean ± std where more than one). Runs {workers} at a time, {threads_per_run(workers)} "
        f"torch thread(s) each (of {torch.get_num_threads()}; OMP_NUM_THREADS sets them). Trained on: "
        + ", ".join(sorted({result.get("device", "cpu") for runs in results.values() for result in runs.values()}))
        + ".",
        "",
        *rows,
        "",
        "LAD teacher's label reliance (test mIoU %): "
        + ", ".join(
            f"{label} {mean_std(reliance[key])}"
            for key, label in (
                ("mean_iou", "with its noised label"),
                ("mean_iou_shuffled_label", "with another image's label"),
                ("mean_iou_zero_label", "with a zero label"),
            )
            if key in reliance
        )
        + ".",
    ]
    if pretrained:
        lines += [
            "",
            "Pretrained backbones (digit classification, train-pool digits only; accuracy on held-out renders): "
            + ", ".join(
                f"{kind} {100 * p['accuracy']:.1f}% in {p['train_seconds']:.0f} s" for kind, p in pretrained.items()
            )
            + ".",
        ]
    return "\n".join(lines) + "\n", summary


ERROR_COLOUR = "#ff00ff"  # no class has it (`class_palette`)


def plot_predictions(
    path: Path, rows: list[dict[str, np.ndarray]], names: tuple[str, ...] = RUNS, id2label: dict | None = None
) -> None:
    """One row per scene: the image, its ground truth, the LAD teacher's noised label, then one column per run of
    the table with its prediction (class colours over the image; background shows the image), its wrong pixels
    outlined, and its mIoU on that scene. A legend gives each class's colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    columns = [("image", "image"), ("label", "ground truth"), ("noised_label", "noised label (teacher input)")]
    columns += [(name, SHORT_TITLES[name]) for name in names]
    figure, axes = plt.subplots(len(rows), len(columns), figsize=(1.7 * len(columns), 1.9 * len(rows) + 0.7))
    axes = np.asarray(axes).reshape(len(rows), len(columns))
    for r, row in enumerate(rows):
        for c, (key, title) in enumerate(columns):
            axis = axes[r][c]
            # Nearest-neighbour pixels: the 64x64 scenes as they are (and a small PNG).
            if key == "image":
                axis.imshow(row["image"], interpolation="nearest")
            elif key == "noised_label":
                axis.imshow(row[key], cmap="viridis", interpolation="nearest")
            else:
                axis.imshow(overlay(row["image"], row[key], alpha=0.55, background=0), interpolation="nearest")
            if key in row.get("miou", {}):
                wrong = (row[key] != row["label"]) & (row["label"] != 255)
                if wrong.any():
                    axis.contour(wrong, levels=[0.5], colors=ERROR_COLOUR, linewidths=0.7)
                axis.set_xlabel(f"mIoU {100 * row['miou'][key]:.1f}", fontsize=7, labelpad=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if r == 0:
                axis.set_title(title, fontsize=7)
    palette = class_palette()
    if id2label is None:
        classes = max(int(row["label"][row["label"] != 255].max(initial=0)) for row in rows) + 1
        id2label = {k: str(k) for k in range(classes)}
    handles = [
        Patch(facecolor=palette[k] / 255, edgecolor="grey", label=f"{name}" + (" (image shown)" if k == 0 else ""))
        for k, name in sorted(id2label.items())
    ]
    handles.append(Line2D([], [], color=ERROR_COLOUR, label="wrong pixels (outlined)"))
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 12), fontsize=7, frameon=False)
    figure.tight_layout(rect=(0, 0.6 / (1.9 * len(rows) + 0.7), 1, 1))
    save_figure(figure, path)
    plt.close(figure)


def plot_curves(path: Path, results: dict[str, dict]) -> None:
    """Validation mIoU against steps for every run of one seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.set_prop_cycle(color=plt.get_cmap("tab20").colors)  # a colour per run, past ten runs too
    for name in results:
        history = results[name]["log_history"]
        evals = [(h["step"], 100 * h["eval_mean_iou"]) for h in history if "eval_mean_iou" in h]
        if evals:
            style = "--" if name in TEACHERS else "-"
            axis.plot(*zip(*evals, strict=True), style, marker="o", markersize=3, label=SHORT_TITLES[name])
    axis.set(xlabel="step", ylabel="validation mIoU (%)", title="Validation mIoU (teachers dashed)")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def save_figure(figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100)


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

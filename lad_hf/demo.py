"""`lad-hf demo`: LAD against its baselines on the built-in digit-scenes benchmark, end to end on a CPU.

Five students of one architecture and one budget, and the teachers they learn from:

1. `student`: the student alone (cross-entropy);
2. `lad_teacher`: a LAD teacher of the student's architecture, reading the noised label, dual-path trained;
3. `student_lad`: the student distilled from (2) with CWD;
4. `student_big`: the student distilled with CWD from `big_teacher`, a wider and deeper image-only model;
5. `student_self`: the control, the student distilled with CWD from (1), a same-size image-only teacher, so that
   LAD's gain is separated from the generic gain of distillation.

Every run writes its model and a `run_result.json` to `<output_dir>/seed-<s>/<run>/`; a demo started again skips the
runs that finished, so a crashed demo resumes. The summary (`results.md`, `results.json`, `predictions.png`,
`curves.png`) is written atomically at the end.
"""

import json
import math
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSemanticSegmentation, ResNetConfig
from transformers.utils import logging

from .configuration_lad_seg import LadSegConfig
from .data import SegmentationCollator, SegmentationTransforms, build_digit_scenes, load_segmentation_dataset
from .data.digit_scenes import class_palette
from .distillation_config import DistillationConfig
from .distillation_trainer import DistillationTrainer
from .label_channel import add_label_channel, build_teacher_inputs
from .lad_teacher_config import LadTeacherConfig
from .lad_teacher_trainer import LadTeacherTrainer
from .modeling_lad_seg import LadSegForSemanticSegmentation
from .noising import LabelNoiser
from .sdes import SelfDistillationConfig, SelfDistillationTrainer
from .segmentation_trainer import SegmentationConfig, SegmentationTrainer


__all__ = ["DemoSettings", "RUNS", "run_demo"]

logger = logging.get_logger(__name__)

RUNS = ("student", "lad_teacher", "student_lad", "big_teacher", "student_big", "student_self")
# More methods on the same student and budget (`lad-hf demo --methods ...`), after the runs above.
METHOD_RUNS = {"fakd": "student_fakd", "lad_fakd": "student_lad_fakd", "sdes": "student_sdes"}
RUN_TITLES = {
    "student": "(1) student alone",
    "lad_teacher": "(2) LAD teacher (same architecture + label channel)",
    "student_lad": "(3) student distilled from (2), CWD",
    "big_teacher": "big image-only teacher",
    "student_big": "(4) student distilled from the big teacher, CWD",
    "student_self": "(5) control: student distilled from (1), CWD",
    "student_fakd": "FAKD: student distilled from the big teacher, FAKD-CWD",
    "student_lad_fakd": "LAD + FAKD: student distilled from (2), FAKD-CWD",
    "student_sdes": "SDES: student self-distilled with expert decoders",
}


@dataclass
class DemoSettings:
    """The demo's budget and models. `budget` scales the number of steps of every run."""

    steps: int = 1200
    budget: float = 1.0
    batch_size: int = 16
    learning_rate: float = 3e-3
    image_size: int = 64
    scale_range: tuple[float, float] = (0.8, 1.25)
    eval_points: int = 4
    student_widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    student_depths: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    big_widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    big_depths: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    decode_channels: int = 64
    label_stem_channels: int = 8
    kd_weight: float = 3.0
    kd_temperature: float = 4.0
    consistency_weight: float = 1.0
    label_noise_alpha: float = 0.01
    eval_batch_size: int = 50

    @property
    def max_steps(self) -> int:
        return max(1, round(self.steps * self.budget))


def segmenter_config(widths: list[int], depths: list[int], decode_channels: int, id2label: dict) -> LadSegConfig:
    """A DeepLabV3 over a small ResNet (output stride 8), the demo's models."""
    backbone = ResNetConfig(embedding_size=widths[0], hidden_sizes=widths, depths=depths, layer_type="basic")
    return LadSegConfig(
        backbone=backbone,
        decode_head="aspp",
        aspp_rates=[2, 4, 6],
        decode_channels=decode_channels,
        id2label=id2label,
        label2id={name: k for k, name in id2label.items()},
    )


def _write_json(path: Path, payload: dict) -> None:
    """Write JSON atomically: to a temporary file in the same folder, then rename it into place."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(payload, handle, indent=1)
    os.replace(handle.name, path)


class DemoRun:
    """One seed of the demo: the datasets, the runs, and their results."""

    def __init__(self, data_dir: Path, out_dir: Path, seed: int, settings: DemoSettings, show_progress: bool):
        self.out_dir, self.seed, self.settings, self.show_progress = out_dir, seed, settings, show_progress
        size = (settings.image_size, settings.image_size)
        train_transform = SegmentationTransforms(size, scale_range=settings.scale_range, seed=seed)
        eval_transform = self.eval_transform = SegmentationTransforms(size, train=False)
        self.train = load_segmentation_dataset(data_dir, "train", transform=train_transform)
        self.validation = load_segmentation_dataset(data_dir, "validation", transform=eval_transform)
        self.test = load_segmentation_dataset(data_dir, "test", transform=eval_transform)
        self.id2label = json.loads((data_dir / "id2label.json").read_text())
        self.id2label = {int(k): v for k, v in self.id2label.items()}

    def args(self, config_class, run: str, **overrides):
        s = self.settings
        steps = s.max_steps
        return config_class(
            output_dir=str(self.out_dir / run / "trainer"),
            max_steps=steps,
            per_device_train_batch_size=s.batch_size,
            per_device_eval_batch_size=s.eval_batch_size,
            learning_rate=s.learning_rate,
            weight_decay=0.01,
            lr_scheduler_type="polynomial",
            lr_scheduler_kwargs={"power": 0.9, "lr_end": 0.0},
            warmup_steps=min(50, steps // 10),
            logging_steps=max(1, steps // 20),
            eval_strategy="steps",
            eval_steps=max(1, steps // s.eval_points),
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            seed=self.seed,
            data_seed=self.seed,
            dataloader_num_workers=0,
            disable_tqdm=not self.show_progress,
            **overrides,
        )

    def model(self, big: bool = False) -> LadSegForSemanticSegmentation:
        s = self.settings
        widths, depths = (s.big_widths, s.big_depths) if big else (s.student_widths, s.student_depths)
        torch.manual_seed(self.seed)
        return LadSegForSemanticSegmentation(segmenter_config(widths, depths, s.decode_channels, self.id2label))

    def run(self, name: str) -> dict:
        """Train and test one run, or read its result if an earlier demo finished it."""
        run_dir = self.out_dir / name
        result_path = run_dir / "run_result.json"
        if result_path.exists():
            logger.warning(f"{name} (seed {self.seed}): finished earlier, reusing {run_dir}")
            return json.loads(result_path.read_text())
        logger.warning(f"{name} (seed {self.seed}): {RUN_TITLES[name]}, {self.settings.max_steps} steps")
        s = self.settings
        common = dict(train_dataset=self.train, eval_dataset=self.validation, data_collator=SegmentationCollator())
        if name in ("student", "big_teacher"):
            trainer = SegmentationTrainer(
                model=self.model(big=name == "big_teacher"), args=self.args(SegmentationConfig, name), **common
            )
        elif name == "lad_teacher":
            args = self.args(
                LadTeacherConfig,
                name,
                label_noise_alpha=s.label_noise_alpha,
                consistency_weight=s.consistency_weight,
            )
            model = add_label_channel(self.model(), args.label_noiser(len(self.id2label)), s.label_stem_channels)
            trainer = LadTeacherTrainer(model=model, args=args, **common)
        elif name == "student_sdes":
            trainer = SelfDistillationTrainer(
                model=self.model(),
                args=self.args(SelfDistillationConfig, name, sdes_temperature=s.kd_temperature),
                **common,
            )
        else:
            teacher_run = {
                "student_lad": "lad_teacher",
                "student_big": "big_teacher",
                "student_self": "student",
                "student_fakd": "big_teacher",
                "student_lad_fakd": "lad_teacher",
            }[name]
            teacher = AutoModelForSemanticSegmentation.from_pretrained(self.out_dir / teacher_run / "model")
            kd_loss = "fakd_cwd" if name.endswith("fakd") else "cwd"
            args = self.args(
                DistillationConfig, name, kd_loss=kd_loss, kd_weight=s.kd_weight, kd_temperature=s.kd_temperature
            )
            trainer = DistillationTrainer(model=self.model(), teacher_model=teacher, args=args, **common)
        start = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - start
        metrics = trainer.evaluate(self.test, metric_key_prefix="test")
        trainer.save_model(str(run_dir / "model"))
        result = {
            "run": name,
            "seed": self.seed,
            "steps": s.max_steps,
            "train_seconds": round(train_seconds, 1),
            "parameters": trainer.model.num_parameters(),
            "test": {k.removeprefix("test_"): v for k, v in metrics.items()},
            "log_history": trainer.state.log_history,
        }
        _write_json(result_path, result)
        return result

    @torch.no_grad()
    def predictions(self, count: int = 4) -> list[dict[str, np.ndarray]]:
        """Image, label, the LAD teacher's noised label, and the predictions of (1), (2) and (3) on test scenes."""
        batch = SegmentationCollator()([self.test[i] for i in range(count)])
        models = {
            name: AutoModelForSemanticSegmentation.from_pretrained(self.out_dir / name / "model").eval()
            for name in ("student", "lad_teacher", "student_lad")
        }
        teacher = models["lad_teacher"]
        noiser = LabelNoiser.from_config(teacher.config)
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
        return [
            {
                "image": images[i],
                "label": batch["labels"][i].numpy(),
                "noised_label": teacher_inputs[i, -1].numpy(),
                **{name: outputs[name][i] for name in models},
            }
            for i in range(count)
        ]


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def summarise(results: dict[int, dict[str, dict]], settings: DemoSettings) -> tuple[str, dict]:
    """The markdown table and the JSON summary over seeds."""
    seeds = sorted(results)
    runs = list(results[seeds[0]])
    rows = [
        "| run | test mIoU (%) | mean accuracy (%) | train time (s) | parameters |",
        "| --- | --- | --- | --- | --- |",
    ]
    summary = {"settings": asdict(settings), "seeds": seeds, "runs": {}}
    for name in runs:
        per_seed = [results[seed][name] for seed in seeds]
        miou = [r["test"]["mean_iou"] for r in per_seed]
        accuracy = [r["test"]["mean_accuracy"] for r in per_seed]
        seconds = [r["train_seconds"] for r in per_seed]
        rows.append(
            f"| {RUN_TITLES[name]} | {_mean_std(miou)} | {_mean_std(accuracy)} | {statistics.mean(seconds):.0f} | "
            f"{per_seed[0]['parameters'] / 1e6:.2f}M |"
        )
        summary["runs"][name] = {"mean_iou": miou, "mean_accuracy": accuracy, "train_seconds": seconds}
    teacher = [results[seed]["lad_teacher"]["test"] for seed in seeds]
    reliance = {
        key: [t[key] for t in teacher]
        for key in ("mean_iou", "mean_iou_shuffled_label", "mean_iou_zero_label")
        if all(key in t for t in teacher)
    }
    summary["lad_teacher_label_reliance"] = reliance
    lines = [
        f"Digit scenes, test split; {settings.max_steps} steps of batch {settings.batch_size} per run at "
        f"{settings.image_size}x{settings.image_size}; seeds {seeds} (mean ± std where more than one).",
        "",
        *rows,
        "",
        "LAD teacher's label reliance (test mIoU %): "
        + ", ".join(
            f"{label} {_mean_std(reliance[key])}"
            for key, label in (
                ("mean_iou", "with its noised label"),
                ("mean_iou_shuffled_label", "with another image's label"),
                ("mean_iou_zero_label", "with a zero label"),
            )
            if key in reliance
        )
        + ".",
    ]
    return "\n".join(lines) + "\n", summary


def plot_predictions(path: Path, rows: list[dict[str, np.ndarray]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [
        ("image", "image"),
        ("label", "ground truth"),
        ("noised_label", "noised label (teacher input)"),
        ("student", "(1) student alone"),
        ("lad_teacher", "(2) LAD teacher"),
        ("student_lad", "(3) student from (2)"),
    ]
    palette = class_palette()
    figure, axes = plt.subplots(len(rows), len(columns), figsize=(2.2 * len(columns), 2.2 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, (key, title) in enumerate(columns):
            axis = axes[r][c]
            if key == "image":
                axis.imshow(row["image"])
            elif key == "noised_label":
                axis.imshow(row[key], cmap="viridis")
            else:
                overlay = row["image"].astype(np.float32) * 0.45 + palette[np.clip(row[key], 0, 255)] * 0.55
                overlay[row[key] == 0] = row["image"][row[key] == 0]
                axis.imshow(overlay.astype(np.uint8))
            axis.set_xticks([])
            axis.set_yticks([])
            if r == 0:
                axis.set_title(title, fontsize=8)
    figure.tight_layout()
    _save_figure(figure, path)
    plt.close(figure)


def plot_curves(path: Path, results: dict[str, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axis, miou_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for name in results:
        history = results[name]["log_history"]
        train = [(h["step"], h["loss"]) for h in history if "loss" in h]
        evals = [(h["step"], h["eval_mean_iou"]) for h in history if "eval_mean_iou" in h]
        if train:
            loss_axis.plot(*zip(*train, strict=True), label=name)
        if evals:
            miou_axis.plot(*zip(*evals, strict=True), marker="o", label=name)
    loss_axis.set(xlabel="step", ylabel="training loss", title="training loss", yscale="log")
    miou_axis.set(xlabel="step", ylabel="validation mIoU", title="validation mIoU")
    miou_axis.legend(fontsize=8)
    figure.tight_layout()
    _save_figure(figure, path)
    plt.close(figure)


def _save_figure(figure, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def run_demo(
    output_dir: str | os.PathLike = "lad-demo",
    seeds: tuple[int, ...] = (0,),
    budget: float = 1.0,
    data_dir: str | os.PathLike | None = None,
    settings: DemoSettings | None = None,
    show_progress: bool = True,
    methods: tuple[str, ...] = (),
) -> dict:
    """Build the digit-scenes benchmark if missing, train and test the demo's runs for each seed, and write the
    summary to `output_dir`. Returns the JSON summary."""
    settings = replace(settings or DemoSettings(), budget=budget)
    if budget <= 0 or not math.isfinite(budget):
        raise ValueError(f"budget must be a positive number (1.0 = the default budget), got {budget}.")
    if not seeds:
        raise ValueError("seeds must name at least one seed.")
    unknown = [m for m in methods if m not in METHOD_RUNS]
    if unknown:
        raise ValueError(f"Unknown methods {unknown}; the demo adds {sorted(METHOD_RUNS)}.")
    runs = RUNS + tuple(METHOD_RUNS[m] for m in methods)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data_dir) if data_dir is not None else output_dir / "digit_scenes"
    if not (data_dir / "build_info.json").exists():
        logger.warning(f"Building the digit-scenes benchmark in {data_dir}")
        build_digit_scenes(data_dir)
    results, first = {}, None
    for seed in seeds:
        demo = DemoRun(data_dir, output_dir / f"seed-{seed}", seed, settings, show_progress)
        results[seed] = {name: demo.run(name) for name in runs}
        first = first or demo
    table, summary = summarise(results, settings)
    plot_predictions(output_dir / "predictions.png", first.predictions())
    plot_curves(output_dir / "curves.png", results[seeds[0]])
    _write_json(output_dir / "results.json", summary)
    tmp = output_dir / ".results.md.tmp"
    tmp.write_text("# lad-hf demo\n\n" + table)
    os.replace(tmp, output_dir / "results.md")
    print(table)
    return summary

"""The demo's summary: the table over seeds, the predictions picture and the validation curves."""

import statistics
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..utils.files import atomic_path
from ..utils.visualization import class_palette, overlay
from .runs import threads_per_run
from .settings import DEMO_RUNS, RUNS, SHORT_TITLES, TEACHERS, DemoSettings


__all__ = ["mean_std", "plot_curves", "plot_predictions", "save_figure", "summarise"]


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

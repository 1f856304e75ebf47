"""Model cards of lad_hf models: the method, the settings a teacher or student was trained with, and its results."""

import json
import os
from enum import Enum
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from .hub import is_hub_id


__all__ = ["model_card"]

# The results a card shows; per-class IoU and run times stay in all_results.json.
METRIC_NAMES = (
    "mean_iou",
    "mean_accuracy",
    "overall_accuracy",
    "mean_iou_shuffled_label",
    "mean_iou_zero_label",
    "stability_kl",
    "loss",
)


def _value(value) -> str:
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, float):
        return f"{value:.4g}"
    return f"`{value}`" if isinstance(value, str) else str(value)


def _table(header: tuple[str, str], rows: dict) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "| --- | --- |"]
    lines += [f"| {name} | {_value(value)} |" for name, value in rows.items()]
    return "\n".join(lines)


def model_card(
    model_id: str,
    method: str,
    settings: dict,
    training: dict,
    results: dict[str, float],
    usage: str,
    dataset: str | None = None,
    base_model: str | None = None,
    tags: list[str] | None = None,
) -> ModelCard:
    """A `huggingface_hub.ModelCard` for a lad_hf run.

    Args:
        model_id: The repo id (or folder name) the usage snippet loads.
        method: One paragraph naming the method.
        settings: The method's settings (label noiser, consistency, KD loss and weights, teacher ...).
        training: Steps, batch size, learning rate, schedule, seed.
        results: Metrics by name, e.g. `eval_mean_iou`; per-class values are left out of the table.
        usage: Python code that loads and uses the model.
        dataset: The dataset's Hub id or name.
        base_model: The Hub id the model was fine-tuned from.
        tags: More Hub tags.
    """
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-segmentation",
        tags=["lad-hf", "semantic-segmentation", *(tags or [])],
        datasets=[dataset] if is_hub_id(dataset) else None,
        base_model=base_model if is_hub_id(base_model) else None,
    )
    shown = {
        name: value
        for name, value in results.items()
        if isinstance(value, int | float) and name.split("_", 1)[-1] in METRIC_NAMES
    }
    sections = [
        f"# {model_id}",
        method,
        "## Settings\n\n" + _table(("setting", "value"), settings) if settings else "",
        "## Training\n\n" + _table(("argument", "value"), {"dataset": dataset, **training}),
        "## Results\n\n" + (_table(("metric", "value"), shown) if shown else "No evaluation was run."),
        f"## Usage\n\n```python\n{usage.strip()}\n```",
        "Trained with lad_hf: Label Assisted Distillation (Qiu et al., ECCV 2024) for semantic segmentation on the "
        "Hugging Face stack.",
    ]
    body = "\n\n".join(section for section in sections if section)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n")


def read_results(output_dir: str | os.PathLike) -> dict:
    """The metrics a Trainer saved with `save_metrics` (`all_results.json`), if any."""
    path = Path(output_dir, "all_results.json")
    return json.loads(path.read_text()) if path.exists() else {}

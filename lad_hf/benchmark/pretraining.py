"""The digit-scenes benchmark's "ImageNet": backbones pretrained on classifying single digits drawn like the scenes'.

The paper's students and teachers start from ImageNet weights, so they know *what* things are before they learn to
segment them. `pretrain_digit_backbone` gives the benchmark's ResNets the same start: it trains a transformers
`ResNetForImageClassification` on fresh renders of single bold digits of the digit-scenes' **train pool only** (the
same strokes, ink, background and clutter as the scenes; never a validation or test digit), and saves it as a
checkpoint that a segmentation model loads exactly as it loads `microsoft/resnet-18`:

    LadSegConfig(backbone="<output_dir>", use_pretrained_backbone=True, ...)
"""

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from transformers import ResNetConfig, ResNetForImageClassification, Trainer, TrainingArguments
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..utils.files import atomic_path
from .digit_scenes import compose_digit, load_mnist_digits, split_digits


__all__ = ["DigitRenders", "pretrain_digit_backbone"]

DIGIT_ID2LABEL = {k: f"digit_{k}" for k in range(10)}
RESULTS_FILE = "pretrain_results.json"


def _normalise(image: np.ndarray) -> torch.Tensor:
    pixels = torch.from_numpy(image).permute(2, 0, 1).float().div_(255)
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)
    return (pixels - mean) / std  # the normalisation of the scenes' SegmentationTransforms


class DigitRenders(torch.utils.data.IterableDataset):
    """Endless fresh renders of single digits of one split's pool, drawn as in the digit scenes
    (`compose_digit`): `{"pixel_values": (3, size, size) normalised, "labels": digit}`.

    Args:
        split (`str`, *optional*, defaults to `"train"`): The pool of digit images (the scenes' split of them).
        size (`int`, *optional*, defaults to 48): Canvas side.
        seed (`int`, *optional*, defaults to 0): Seed of the renders; each dataloader worker draws its own.
        limit (`int`, *optional*): Stop after this many renders (a fixed evaluation set); endless by default.
    """

    def __init__(self, split: str = "train", size: int = 48, seed: int = 0, limit: int | None = None):
        super().__init__()
        digits, labels = load_mnist_digits()
        pool = split_digits(labels)[split]
        self.digits, self.labels = digits[pool], labels[pool]
        self.size, self.seed, self.limit = size, seed, limit

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, worker.id if worker is not None else 0])
        count = 0
        while self.limit is None or count < self.limit:
            image, index = compose_digit(self.digits, rng, self.size)
            yield {"pixel_values": _normalise(image), "labels": int(self.labels[index])}
            count += 1

    def __len__(self) -> int:
        if self.limit is None:
            raise TypeError("An endless DigitRenders has no length; train it with max_steps.")
        return self.limit


def _accuracy(prediction) -> dict[str, float]:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def pretrain_digit_backbone(
    backbone_config: ResNetConfig,
    output_dir: str | os.PathLike,
    steps: int = 1500,
    batch_size: int = 64,
    image_size: int = 48,
    learning_rate: float = 3e-3,
    eval_renders: int = 1000,
    seed: int = 0,
    show_progress: bool = True,
) -> dict:
    """Pretrain a ResNet on digit classification, from the digit-scenes train pool only, and save it.

    The model is a transformers `ResNetForImageClassification` with `backbone_config`'s widths and depths and 10
    classes, trained with the `Trainer` (AdamW, linear warm-up, cosine decay) on `steps` batches of fresh renders
    (`DigitRenders("train")`). Its accuracy is measured on `eval_renders` other renders of the same train pool. The
    folder is written under a temporary name and renamed when complete; a folder that holds a finished pretraining
    with the same settings is reused.

    Args:
        backbone_config (`ResNetConfig`): The backbone to pretrain (`num_channels` 3).
        output_dir (`str` or `os.PathLike`): Where the checkpoint goes (`config.json`, `model.safetensors`,
            `pretrain_results.json`).
        steps, batch_size, image_size, learning_rate: The pretraining budget.
        eval_renders (`int`, *optional*, defaults to 1000): Held-out renders of train-pool digits for the accuracy.
        seed (`int`, *optional*, defaults to 0): Seed of the weights and the renders.
        show_progress (`bool`, *optional*, defaults to `True`): The Trainer's progress bar.

    Returns:
        The saved results: `accuracy`, `train_seconds` and the settings.
    """
    output_dir = Path(output_dir)
    settings = {
        "hidden_sizes": list(backbone_config.hidden_sizes),
        "depths": list(backbone_config.depths),
        "embedding_size": backbone_config.embedding_size,
        "layer_type": backbone_config.layer_type,
        "steps": steps,
        "batch_size": batch_size,
        "image_size": image_size,
        "learning_rate": learning_rate,
        "seed": seed,
        "digit_pool": "train",
    }
    results_path = output_dir / RESULTS_FILE
    if results_path.exists():
        saved = json.loads(results_path.read_text())
        if saved["settings"] == settings:
            return saved
        raise FileExistsError(
            f"{output_dir} holds a backbone pretrained with other settings ({saved['settings']}); remove it or "
            "pretrain into another folder."
        )
    config = ResNetConfig(**{**backbone_config.to_dict(), "num_labels": 10, "id2label": DIGIT_ID2LABEL})
    config.label2id = {name: k for k, name in DIGIT_ID2LABEL.items()}
    torch.manual_seed(seed)
    model = ResNetForImageClassification(config)
    trainer_dir = output_dir.with_name(f".{output_dir.name}.trainer")
    args = TrainingArguments(
        output_dir=str(trainer_dir),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=250,
        learning_rate=learning_rate,
        weight_decay=0.01,
        lr_scheduler_type="cosine",
        warmup_steps=min(100, steps // 10),
        logging_steps=max(1, steps // 10),
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),  # a GPU when there is one, as the Trainer's default
        seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=not show_progress,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=DigitRenders("train", image_size, seed=seed),
        eval_dataset=DigitRenders("train", image_size, seed=seed + 10_000, limit=eval_renders),
        compute_metrics=_accuracy,
    )
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    metrics = trainer.evaluate()
    results = {
        "accuracy": metrics["eval_accuracy"],
        "train_seconds": round(train_seconds, 1),
        "parameters": model.resnet.num_parameters(),
        "log_history": trainer.state.log_history,
        "settings": settings,
    }
    shutil.rmtree(trainer_dir, ignore_errors=True)
    with atomic_path(output_dir) as tmp:
        model.save_pretrained(tmp)
        (tmp / RESULTS_FILE).write_text(json.dumps(results, indent=1))
    return results

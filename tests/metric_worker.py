"""Evaluate a saved model with the Trainer and `SegmentationMetric` (batch_eval_metrics), in one or more processes.

python -m torch.distributed.run --nproc_per_node 2 tests/metric_worker.py MODEL_DIR RESULTS_JSON OUTPUT_DIR
"""

import json
import sys

import torch
from transformers import AutoModelForSemanticSegmentation, Trainer, TrainingArguments

from lad_hf import SegmentationMetric, predictions_from_logits


def eval_samples(num_samples: int = 7, num_labels: int = 4, size: int = 32) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(num_samples):
        labels = torch.randint(0, num_labels - 1, (size, size), generator=generator)  # the last class never occurs
        labels[: size // 4] = 255
        samples.append({"pixel_values": torch.randn(3, size, size, generator=generator), "labels": labels})
    return samples


def main(model_dir: str, results_path: str, output_dir: str) -> None:
    model = AutoModelForSemanticSegmentation.from_pretrained(model_dir)
    metric = SegmentationMetric(model.config.num_labels)
    args = TrainingArguments(
        output_dir, per_device_eval_batch_size=2, batch_eval_metrics=True, report_to="none", use_cpu=True
    )
    trainer = Trainer(
        model=model,
        args=args,
        eval_dataset=eval_samples(num_labels=model.config.num_labels),
        compute_metrics=metric.compute_metrics,
        preprocess_logits_for_metrics=predictions_from_logits,
    )
    results = trainer.evaluate()
    results["world_size"] = args.world_size
    if trainer.is_world_process_zero():
        with open(results_path, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
    if torch.distributed.is_initialized():  # leave no communication thread running at exit
        torch.distributed.destroy_process_group()

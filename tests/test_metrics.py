import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_lad_seg_config
from metric_worker import eval_samples
from transformers import EvalPrediction

from lad_hf import LadSegForSemanticSegmentation, SegmentationMetric


def numpy_reference(preds: np.ndarray, labels: np.ndarray, num_labels: int, ignore_index: int = 255) -> dict:
    """mIoU computed class by class with boolean masks, leaving out classes absent from both sides."""
    valid = (labels != ignore_index) & (labels != -100)
    preds, labels = preds[valid], labels[valid]
    ious, accuracies = [], []
    for k in range(num_labels):
        in_label, in_pred = labels == k, preds == k
        union = np.logical_or(in_label, in_pred).sum()
        ious.append(np.logical_and(in_label, in_pred).sum() / union if union else np.nan)
        accuracies.append(np.logical_and(in_label, in_pred).sum() / in_label.sum() if in_label.sum() else np.nan)
    return {
        "mean_iou": np.nanmean(ious),
        "mean_accuracy": np.nanmean(accuracies),
        "overall_accuracy": (preds == labels).mean(),
        "ious": ious,
    }


def random_batch(rng: np.random.Generator, num_labels: int = 6) -> tuple[np.ndarray, np.ndarray]:
    # Class 4 appears only in predictions, class 3 only in labels, class 5 nowhere.
    labels = rng.choice([0, 1, 2, 3], size=(3, 9, 11))
    preds = rng.choice([0, 1, 2, 4], size=(3, 9, 11))
    labels[rng.random(labels.shape) < 0.1] = 255
    labels[0, -1] = -100
    return preds, labels


def test_matches_numpy_reference_with_absent_classes():
    rng = np.random.default_rng(0)
    metric = SegmentationMetric(num_labels=6, id2label={i: f"c{i}" for i in range(6)})
    all_preds, all_labels = [], []
    for _ in range(3):
        preds, labels = random_batch(rng)
        metric.update(torch.from_numpy(preds), torch.from_numpy(labels))
        all_preds.append(preds)
        all_labels.append(labels)
    result = metric.compute()
    reference = numpy_reference(np.concatenate(all_preds), np.concatenate(all_labels), 6)
    for key in ("mean_iou", "mean_accuracy", "overall_accuracy"):
        assert result[key] == pytest.approx(reference[key], rel=1e-12)
    assert result["iou_c4"] == 0.0  # predicted but never labelled: counts as 0
    assert np.isnan(result["iou_c5"])  # absent from both: left out of the mean
    for k in range(5):
        assert result[f"iou_c{k}"] == pytest.approx(reference["ious"][k], rel=1e-12)


def test_logits_are_upsampled_to_the_label_size():
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 16, 16))
    from_logits, from_ids = SegmentationMetric(3), SegmentationMetric(3)
    from_logits.update(logits, labels)
    upsampled = F.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False).argmax(1)
    from_ids.update(upsampled, labels)
    assert torch.equal(from_logits.confusion, from_ids.confusion)


def test_reset_clears_the_matrix():
    metric = SegmentationMetric(3)
    metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.ones(1, 2, 2, dtype=torch.long))
    metric.reset()
    metric.update(torch.ones(1, 2, 2, dtype=torch.long), torch.ones(1, 2, 2, dtype=torch.long))
    assert metric.compute()["mean_iou"] == 1.0


def test_compute_metrics_accumulates_batches_then_resets():
    rng = np.random.default_rng(1)
    metric = SegmentationMetric(6)
    batches = [random_batch(rng) for _ in range(3)]
    assert metric.compute_metrics(EvalPrediction(*batches[0]), compute_result=False) == {}
    assert metric.compute_metrics(EvalPrediction(*batches[1]), compute_result=False) == {}
    result = metric.compute_metrics(EvalPrediction(*batches[2]), compute_result=True)
    reference = numpy_reference(np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]), 6)
    assert result["mean_iou"] == pytest.approx(reference["mean_iou"], rel=1e-12)
    assert int(metric.confusion.sum()) == 0


def test_bad_input_raises():
    metric = SegmentationMetric(3)
    with pytest.raises(ValueError, match=r"\[3\].*\[0, 3\)"):
        metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 3))
    with pytest.raises(ValueError, match="differ in shape"):
        metric.update(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="logits of shape"):
        metric.update(torch.zeros(1, 5, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="integer class ids"):
        metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_trainer_gives_the_same_numbers_in_one_or_two_processes(tmp_path: Path):
    model = LadSegForSemanticSegmentation(tiny_lad_seg_config(num_labels=4)).eval()
    model.save_pretrained(tmp_path / "model")
    worker = str(Path(__file__).with_name("metric_worker.py"))
    results = {}
    for processes in (1, 2):
        out = tmp_path / f"results_{processes}.json"
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
        launcher += ["--master_addr", "127.0.0.1", "--master_port", str(free_port())]
        run = subprocess.run(
            launcher + [worker, str(tmp_path / "model"), str(out), str(tmp_path / f"out_{processes}")],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        results[processes] = json.loads(out.read_text())
    assert results[2]["world_size"] == 2

    # The reference: the model run directly over the 7 samples (the last batch of 2 processes is padded).
    direct = SegmentationMetric(4)
    with torch.no_grad():
        for sample in eval_samples(num_labels=4):
            direct.update(model(sample["pixel_values"][None]).logits, sample["labels"][None])
    expected = direct.compute()
    for processes in (1, 2):
        for key, value in expected.items():
            assert results[processes][f"eval_{key}"] == pytest.approx(value, rel=1e-9, nan_ok=True), (processes, key)

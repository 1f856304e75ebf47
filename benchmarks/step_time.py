"""What a LAD step costs against its floor and against KD from a big teacher, measured side by side in one run.

Times, with one student (DeepLabV3-R18, output stride 8), one batch size and one resolution:
  (a) a plain training step of the student (SegmentationTrainer);
  (b) a LAD distillation step: a DeepLabV3-R18 LAD teacher (label channel) + the student (DistillationTrainer);
  (c) a CWD distillation step from a DeepLabV3-R101 conventional teacher (DistillationTrainer);
  (d) a LAD teacher training step, the two noised paths as one batch of 2B (LadTeacherTrainer);
  (e) the same with the two paths as two sequential forwards;
  (f) the label noising module alone (on the 2B labels of a teacher step);
  (g) SegmentationMetric.update on one evaluation batch, against the evaluation step it belongs to;
  (h) a training step of an STDC2-Seg student, and (i) its LAD distillation step from an STDC1-Seg LAD teacher (the
      paper's simple-to-complex real-time pairing, Table 7);
  (j)-(m) the distillation step of the paper's comparison methods from the same R101 teacher as (c): SKD, IFVD (both
      with their discriminator's step), CIRKD (with its memory at its code's sizes) and MasKD (the second stage: the
      tokens' first stage is a one-off). Their ratios to (c) are the paper's Dtime column (Table 1) over CWD's.
Each is the median of --steps steps after --warmup; every step is forward, backward and an SGD update through the
trainers' own `training_step`. "autograd MB" is the memory of the tensors the step saves for its backward pass
(counted with saved-tensor hooks, on any device): a teacher run under no_grad adds nothing to it. On CUDA the peak
allocated memory of each step is reported too.

    python benchmarks/step_time.py                                   # CPU: 4 x 256x512
    python benchmarks/step_time.py --device cuda --batch_size 16 --height 512 --width 1024   # the paper's setting
    python benchmarks/step_time.py --device cuda --bf16 --channels_last ...                 # GPU options
    python benchmarks/step_time.py --smoke                           # tiny sizes, seconds: keeps the script working

Prints a table and the ratios against their targets, and writes JSON (--output).
"""

import argparse
import platform
import statistics
import tempfile
import time

import torch

from lad_hf import (
    DistillationConfig,
    DistillationTrainer,
    LabelNoiser,
    LadSegConfig,
    LadSegForSemanticSegmentation,
    LadTeacherConfig,
    LadTeacherTrainer,
    SegmentationConfig,
    SegmentationMetric,
    SegmentationTrainer,
    add_label_channel,
    dual_path_consistency,
    predictions_from_logits,
)
from lad_hf.utils.files import write_json


TARGETS = {"b/c": 0.65, "b/a": 1.45, "d/e": 0.95, "f/d": 0.01, "g/eval": 0.05}
# Table 1's Dtime over CWD's (415 ms on a V100 at 512x1024): SKD 780, IFVD 1018, CIRKD 1295, MasKD 846, LAD 270 ms.
PAPER = {"b/c": 270 / 415, "j/c": 780 / 415, "k/c": 1018 / 415, "l/c": 1295 / 415, "m/c": 846 / 415}
METHOD_ROWS = {"j": "skd", "k": "ifvd", "l": "cirkd", "m": "maskd"}


class SequentialPathsTeacherTrainer(LadTeacherTrainer):
    """(e): the dual-path loss of LadTeacherTrainer with the two noised paths as two forwards of B."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pixel_values, labels = inputs["pixel_values"], inputs["labels"]
        generator = self.step_generator(labels.device)
        outputs = []
        for _ in range(2):
            channel = self.noiser(labels, generator=generator).to(pixel_values.dtype)
            outputs.append(model(pixel_values=torch.cat([pixel_values, channel], 1), labels=labels))
        consistency = dual_path_consistency(outputs[0].logits, outputs[1].logits, self.args.consistency_temperature)
        return outputs[0].loss + outputs[1].loss + self.ramped_consistency_weight() * consistency


class SavedForBackward:
    """Bytes of the distinct storages that autograd saves for the backward pass while the context is open."""

    def __enter__(self):
        self.storages: dict[int, int] = {}
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor)
        self.hooks.__enter__()
        return self

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    def __exit__(self, *exc):
        self.hooks.__exit__(*exc)

    @property
    def megabytes(self) -> float:
        return sum(self.storages.values()) / 2**20


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(run, device: torch.device, steps: int, warmup: int) -> list[float]:
    times = []
    for index in range(warmup + steps):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return times


def segmenter(
    backbone: str, num_labels: int, device: torch.device, head: str = "aspp"
) -> LadSegForSemanticSegmentation:
    config = LadSegConfig(backbone=backbone, decode_head=head, num_labels=num_labels)
    return LadSegForSemanticSegmentation(config).to(device)


def measure_step(trainer, inputs, device, steps, warmup) -> dict:
    """Median time of forward + backward (the trainer's training_step) + SGD update, and its autograd memory."""
    model = trainer.model
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(), which this calls the steps of
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def step():
        trainer.training_step(model, inputs)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = time_calls(step, device, steps, warmup)
    with SavedForBackward() as saved:
        loss = trainer.compute_loss(model, inputs)
    del loss
    optimizer.zero_grad(set_to_none=True)
    result = {"seconds": statistics.median(times), "times": times, "autograd_mb": saved.megabytes}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        step()
        synchronize(device)
        result["peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--num_labels", type=int, default=19)
    parser.add_argument("--steps", type=int, default=3, help="timed steps of each kind (after --warmup)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (TrainingArguments.bf16)")
    parser.add_argument("--channels_last", action="store_true", help="SegmentationConfig.channels_last")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check that the script runs")
    parser.add_argument("--output", default="benchmarks/results/step_time.json")
    args = parser.parse_args()
    if args.smoke:
        args.batch_size, args.height, args.width, args.steps, args.warmup = 2, 64, 64, 1, 0
    device = torch.device(args.device)
    torch.manual_seed(0)
    batch = {
        "pixel_values": torch.randn(args.batch_size, 3, args.height, args.width, device=device),
        "labels": torch.randint(0, args.num_labels, (args.batch_size, args.height, args.width), device=device),
    }
    settings = dict(report_to="none", use_cpu=device.type == "cpu", disable_tqdm=True, save_strategy="no")
    settings.update(bf16=args.bf16, channels_last=args.channels_last)
    noiser = LabelNoiser(args.num_labels)
    results, measure = {}, dict(device=device, steps=args.steps, warmup=args.warmup)

    with tempfile.TemporaryDirectory() as out:
        student = segmenter("resnet-18", args.num_labels, device)
        parameters = {"student": student.num_parameters()}
        trainer = SegmentationTrainer(model=student, args=SegmentationConfig(output_dir=out, **settings))
        results["a"] = measure_step(trainer, batch, **measure)

        lad_teacher = add_label_channel(segmenter("resnet-18", args.num_labels, device), noiser).eval()
        distill_args = DistillationConfig(output_dir=out, **settings)
        trainer = DistillationTrainer(model=student, teacher_model=lad_teacher, args=distill_args)
        results["b"] = measure_step(trainer, batch, **measure)

        big_teacher = segmenter("resnet-101", args.num_labels, device).eval()
        parameters["R101 teacher"] = big_teacher.num_parameters()
        trainer = DistillationTrainer(model=student, teacher_model=big_teacher, args=distill_args)
        results["c"] = measure_step(trainer, batch, **measure)
        for key, method in METHOD_ROWS.items():
            method_args = DistillationConfig(output_dir=out, kd_loss=method, **settings)
            trainer = DistillationTrainer(model=student, teacher_model=big_teacher, args=method_args)
            results[key] = measure_step(trainer, batch, **measure)
        del big_teacher, trainer

        teacher = add_label_channel(segmenter("resnet-18", args.num_labels, device), noiser)
        teacher_args = LadTeacherConfig(output_dir=out, **settings)
        results["d"] = measure_step(LadTeacherTrainer(model=teacher, args=teacher_args), batch, **measure)
        results["e"] = measure_step(SequentialPathsTeacherTrainer(model=teacher, args=teacher_args), batch, **measure)

        labels_twice = torch.cat([batch["labels"], batch["labels"]])
        generator = torch.Generator(device=device).manual_seed(0)
        times = time_calls(lambda: noiser(labels_twice, generator=generator), **measure)
        results["f"] = {"seconds": statistics.median(times), "times": times}

        stdc2 = segmenter("stdc2", args.num_labels, device, head="stdc")
        parameters["STDC2 student"] = stdc2.num_parameters()
        trainer = SegmentationTrainer(model=stdc2, args=SegmentationConfig(output_dir=out, **settings))
        results["h"] = measure_step(trainer, batch, **measure)
        stdc1_teacher = add_label_channel(segmenter("stdc1", args.num_labels, device, head="stdc"), noiser).eval()
        parameters["STDC1 LAD teacher"] = stdc1_teacher.num_parameters()
        trainer = DistillationTrainer(model=stdc2, teacher_model=stdc1_teacher, args=distill_args)
        results["i"] = measure_step(trainer, batch, **measure)
        del stdc2, stdc1_teacher, trainer

        metric = SegmentationMetric(args.num_labels)
        student.eval()

        def eval_step():
            with torch.no_grad():
                logits = student(pixel_values=batch["pixel_values"]).logits
                metric.update(predictions_from_logits(logits, batch["labels"]), batch["labels"])

        times = time_calls(eval_step, **measure)
        results["eval"] = {"seconds": statistics.median(times), "times": times}
        with torch.no_grad():
            ids = predictions_from_logits(student(pixel_values=batch["pixel_values"]).logits, batch["labels"])
        times = time_calls(lambda: metric.update(ids, batch["labels"]), **measure)
        results["g"] = {"seconds": statistics.median(times), "times": times}

    seconds = {key: value["seconds"] for key, value in results.items()}
    ratios = {
        "b/a": seconds["b"] / seconds["a"],
        "c/a": seconds["c"] / seconds["a"],
        "b/c": seconds["b"] / seconds["c"],
        "d/e": seconds["d"] / seconds["e"],
        "f/d": seconds["f"] / seconds["d"],
        "g/eval": seconds["g"] / seconds["eval"],
        "i/h": seconds["i"] / seconds["h"],
        **{f"{key}/c": seconds[key] / seconds["c"] for key in METHOD_ROWS},
    }
    names = {
        "a": "(a) student step",
        "b": "(b) LAD distillation step (R18 LAD teacher)",
        "c": "(c) CWD step from a DeepLabV3-R101 teacher",
        "d": "(d) LAD teacher step, paths as one 2B batch",
        "e": "(e) LAD teacher step, two sequential forwards",
        "f": "(f) label noising module (2B labels)",
        "eval": "evaluation step (forward + metric)",
        "g": "(g) SegmentationMetric.update",
        "h": "(h) STDC2-Seg student step",
        "i": "(i) LAD step, STDC1 LAD teacher -> STDC2 student",
        "j": "(j) SKD step from the R101 teacher",
        "k": "(k) IFVD step from the R101 teacher",
        "l": "(l) CIRKD step from the R101 teacher",
        "m": "(m) MasKD step from the R101 teacher",
    }
    hardware = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    shape = f"{args.batch_size} x {args.height}x{args.width}, {args.num_labels} classes"
    shape += ", bf16 autocast" * args.bf16 + ", channels-last" * args.channels_last
    print(f"{shape}, {hardware}, torch {torch.__version__}")
    print(f"{'':<48}{'ms':>10}{'autograd MB':>14}" + (f"{'peak MB':>10}" if device.type == "cuda" else ""))
    for key, name in names.items():
        row = results[key]
        autograd = f"{row['autograd_mb']:>14.0f}" if "autograd_mb" in row else f"{'':>14}"
        peak = f"{row['peak_allocated_mb']:>10.0f}" if "peak_allocated_mb" in row else ""
        print(f"{name:<48}{1000 * row['seconds']:>10.1f}{autograd}{peak}")
    print()
    for key, value in ratios.items():
        target = TARGETS.get(key)
        verdict = "" if target is None else f"  target <= {target:g}: {'met' if value <= target else 'MISSED'}"
        paper = f"  paper (Dtime, V100) {PAPER[key]:.2f}" if key in PAPER else ""
        print(f"{key:<8}{value:>8.3f}{verdict}{paper}")

    result = {
        "hardware": hardware,
        "device": device.type,
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "size": [args.height, args.width],
        "num_labels": args.num_labels,
        "bf16": args.bf16,
        "channels_last": args.channels_last,
        "parameters": parameters,
        "results": results,
        "ratios": ratios,
        "targets": TARGETS,
        "paper_ratios": PAPER,
    }
    write_json(args.output, result, indent=2)


if __name__ == "__main__":
    main()

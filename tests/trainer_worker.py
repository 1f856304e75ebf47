"""Train a LAD teacher, or distil a student, for a few steps in one or more processes; then evaluate and save.

    python -m torch.distributed.run --nproc_per_node 2 tests/trainer_worker.py {teacher,distill,cirkd} OUTPUT_DIR

Each process writes `rank<N>.json`: checksums of its trained weights and of the teacher, and the eval metrics; with
`cirkd` (distillation with CIRKD's memory), also the memory's checksum and pointers, and the (image, class) regions
this process saw.
"""

import hashlib
import json
import sys
from pathlib import Path

import torch
from conftest import split_scenes, tiny_lad_seg_config, trainer_args

from lad_hf import (
    DistillationConfig,
    DistillationTrainer,
    LabelNoiser,
    LadSegForSemanticSegmentation,
    LadTeacherConfig,
    LadTeacherTrainer,
    add_label_channel,
)


def checksum(model: torch.nn.Module, parameters_only: bool = False) -> str:
    # Under DDP each process updates its own batch-norm statistics in the last step; the weights must agree.
    tensors = [p for p in model.parameters()] if parameters_only else model.state_dict().values()
    return hashlib.sha256(b"".join(t.detach().cpu().contiguous().numpy().tobytes() for t in tensors)).hexdigest()


def datasets(size: int = 32) -> tuple[list, list]:
    def crop(samples):
        return [
            {"pixel_values": s["pixel_values"][:, :size, :size], "labels": s["labels"][:size, :size]} for s in samples
        ]

    return crop(split_scenes(16, seed=0)), crop(split_scenes(7, seed=1))  # 7: the last eval batch is uneven


def main(mode: str, output_dir: str) -> None:
    train, val = datasets()
    settings = dict(max_steps=3, per_device_train_batch_size=2, per_device_eval_batch_size=2, learning_rate=1e-3)
    torch.manual_seed(0)  # the same initial weights in every process
    teacher = None
    if mode == "teacher":
        model = add_label_channel(LadSegForSemanticSegmentation(tiny_lad_seg_config("aspp")), LabelNoiser(3))
        trainer = LadTeacherTrainer(
            model=model,
            args=trainer_args(LadTeacherConfig, output_dir, **settings),
            train_dataset=train,
            eval_dataset=val,
        )
    else:
        teacher = add_label_channel(LadSegForSemanticSegmentation(tiny_lad_seg_config("psp")), LabelNoiser(3))
        model = LadSegForSemanticSegmentation(tiny_lad_seg_config("aspp"))
        if mode == "cirkd":
            settings.update(kd_loss="cirkd", cirkd_pixel_memory_size=1000, cirkd_region_memory_size=1000)
        trainer = DistillationTrainer(
            model=model,
            teacher_model=teacher,
            args=trainer_args(DistillationConfig, output_dir, **settings),
            train_dataset=train,
            eval_dataset=val,
        )
    teacher_before = checksum(teacher) if teacher is not None else None
    regions_seen = []
    if mode == "cirkd":  # count the regions of this process's batches, before the memory gathers all processes'
        memory = trainer.kd_objective.memory
        enqueue = memory.enqueue

        def counting_enqueue(features, labels, gather=None):
            regions_seen.append(sum(len(set(image.unique().tolist()) - {255}) for image in labels))
            enqueue(features, labels, gather)

        memory.enqueue = counting_enqueue
    trainer.train()
    metrics = trainer.evaluate()
    result = {
        "world_size": trainer.args.world_size,
        "weights": checksum(trainer.model, parameters_only=True),
        "teacher_before": teacher_before,
        "teacher_after": checksum(teacher) if teacher is not None else None,
        "metrics": metrics,
    }
    if mode == "cirkd":
        result.update(
            memory=checksum(trainer.kd_objective.memory),
            region_pointer=trainer.kd_objective.memory.region_pointer.tolist(),
            regions_seen=sum(regions_seen),
            projection=checksum(trainer.kd_objective.project, parameters_only=True),
        )
    Path(output_dir, f"rank{trainer.args.process_index}.json").write_text(json.dumps(result))
    trainer.save_model(str(Path(output_dir, "model")))


if __name__ == "__main__":
    main(*sys.argv[1:])
    if torch.distributed.is_initialized():  # leave no communication thread running at exit
        torch.distributed.destroy_process_group()

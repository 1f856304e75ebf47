"""`lad-hf evaluate`: mIoU of a trained model on a split, optionally with flip and multi-scale testing and
sliding-window inference.

    lad-hf evaluate --config configs/cityscapes_deeplabv3_r18_distill.yaml --model_name_or_path runs/student \
        --eval_mode original --sliding_window --window_size 512 1024 --per_device_eval_batch_size 1
    accelerate launch scripts/evaluate.py --model_name_or_path runs/student --dataset_name cityscapes --flip
"""

from dataclasses import fields

from ..data import SegmentationCollator
from ..hub import load_segmentation_model
from ..inference import TTASegmenter
from ..label_channel.noising import is_lad_teacher
from ..trainers.lad_teacher_config import LadTeacherConfig
from ..trainers.lad_teacher_trainer import LadTeacherTrainer
from ..trainers.segmentation_config import SegmentationConfig
from ..trainers.segmentation_trainer import SegmentationTrainer
from .arguments import DataArguments, InferenceArguments, ModelArguments, parse_arguments
from .common import check_run_hub_ids, load_data, load_image_processor


DESCRIPTION = (
    "Evaluate a segmentation model (mIoU, accuracies, per-class IoU) on a split. A LAD teacher is evaluated with "
    "its noised label, and with another image's label and a zero label (its label reliance)."
)


def main(argv: list[str] | None = None, prog: str = "lad-hf evaluate") -> dict:
    model_args, data_args, inference, args, values = parse_arguments(
        (ModelArguments, DataArguments, InferenceArguments, SegmentationConfig), argv, prog, DESCRIPTION
    )
    if model_args.model_name_or_path is None:
        raise ValueError("Name the model to evaluate: --model_name_or_path (a Hub id or the folder of a run).")
    if data_args.eval_split is None:
        raise ValueError("Name the split to evaluate on: --eval_split (e.g. validation or test).")
    check_run_hub_ids(model_args, data_args)
    model = load_segmentation_model(model_args.model_name_or_path)
    image_processor = load_image_processor(model_args.model_name_or_path)
    _, eval_dataset, _ = load_data(data_args, args, image_processor, train=False)
    common = dict(eval_dataset=eval_dataset, data_collator=SegmentationCollator())
    if is_lad_teacher(model.config):
        if not inference.is_plain:
            raise ValueError("flip, scales and sliding_window apply to image-only models, not to a LAD teacher.")
        # The teacher's trainer evaluates it with its recorded noiser, and its label reliance.
        teacher_args = LadTeacherConfig(**{f.name: values[f.name] for f in fields(SegmentationConfig) if f.init})
        trainer = LadTeacherTrainer(model=model, args=teacher_args, **common)
    else:
        if not inference.is_plain:
            window = tuple(inference.window_size or data_args.crop_size) if inference.sliding_window else None
            stride = tuple(inference.window_stride) if inference.window_stride else None
            model = TTASegmenter(model, inference.scales, inference.flip, window, stride, args.ignore_index)
        trainer = SegmentationTrainer(model=model, args=args, **common)
    metrics = trainer.evaluate()
    trainer.log_metrics("eval", metrics)
    metrics.update(
        eval_flip=inference.flip, eval_scales=inference.scales, eval_sliding_window=inference.sliding_window
    )
    trainer.save_metrics("eval", metrics)
    return metrics

"""Distilling a frozen teacher into a student that sees only the image (paper Eq. 8)."""

import contextlib
import os

import torch
from peft import LoraConfig, PeftConfig, PeftModel
from transformers import PreTrainedModel
from transformers.utils import logging

from .distillation_config import DistillationConfig
from .fakd import ClassFeatureCovariance, augmentation_variance, cosine_ratio
from .hub import load_segmentation_model
from .label_channel import build_teacher_inputs
from .labels import resize_labels
from .lora import apply_lora
from .losses import detail_aggregation_loss, segmentation_cross_entropy
from .modeling_lad_seg import LadSegPreTrainedModel
from .noising import LabelNoiser, is_lad_teacher
from .segmentation_trainer import SegmentationTrainer


__all__ = ["DistillationTrainer"]

logger = logging.get_logger(__name__)


def _class_names(config) -> list[str] | None:
    """The class names, or None where the config only has transformers' placeholder names (LABEL_0 ...)."""
    names = [config.id2label[k] for k in sorted(config.id2label)]
    return None if names == [f"LABEL_{k}" for k in range(len(names))] else names


def check_same_label_set(student_config, teacher_config) -> None:
    """Raise before training when student and teacher predict different classes."""
    if student_config.num_labels != teacher_config.num_labels:
        raise ValueError(
            f"The student predicts {student_config.num_labels} classes and the teacher {teacher_config.num_labels}: "
            "distillation needs the same label set. Build the student with the teacher's id2label."
        )
    student_names, teacher_names = _class_names(student_config), _class_names(teacher_config)
    if student_names is not None and teacher_names is not None and student_names != teacher_names:
        differ = [(k, s, t) for k, (s, t) in enumerate(zip(student_names, teacher_names, strict=True)) if s != t]
        raise ValueError(
            f"Student and teacher name their classes differently (id, student, teacher): {differ[:5]}. Distillation "
            "needs the same label set in the same order: build the student with the teacher's id2label."
        )


def _base_model(model):
    """The student itself, under its LoRA adapters if it has them."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def _student_classifier(model) -> torch.nn.Conv2d:
    """The student's final classifier, a 1x1 convolution at `decode_head.classifier` (lad_hf models, Segformer)."""
    base = _base_model(model)
    classifier = getattr(getattr(base, "decode_head", None), "classifier", None)
    if not isinstance(classifier, torch.nn.Conv2d) or classifier.kernel_size != (1, 1):
        raise ValueError(
            f"FAKD augments the features of the student's classifier, a 1x1 Conv2d at decode_head.classifier; "
            f"{type(base).__name__} has none. Use kd_loss='cwd' or 'pixel_kd' with this student."
        )
    return classifier


class DistillationTrainer(SegmentationTrainer):
    r"""Trains a student from its labels and a frozen teacher's logits (paper Eq. 8):

        L_S = task_weight * CE(O_S, y) + kd_weight * KD(O_S, O_T)

    The student sees the image only; its forward never receives labels. If the teacher's config records a label
    noiser (a LAD teacher), the teacher reads the image plus the batch's labels noised with it, exactly as it was
    trained; otherwise it is a conventional teacher on the image. `KD` is one of `KD_LOSSES` (`args.kd_loss`).
    `loss_task` and `loss_kd` are logged apart.

    The teacher is prepared with `accelerator.prepare_model(..., evaluation_mode=True)`, kept in `eval()` without
    gradients and run under `no_grad`. Trainer checkpoints do not hold it: a resumed run reloads it from its source.

    Args:
        model (`PreTrainedModel`): The student, any segmentation model returning `logits` (and, for lad_hf models
            in training mode, `auxiliary_logits`).
        teacher_model (`PreTrainedModel` or `str`, *optional*): The teacher, or a Hub id / local folder loaded with
            `AutoModelForSemanticSegmentation.from_pretrained`. Defaults to `args.teacher_model_name_or_path`.
        args (`DistillationConfig`): Training arguments.
        peft_config (`peft.PeftConfig`, *optional*): Train the student through these adapters (e.g.
            `lad_hf.dinov2_lora_config()`): only the adapters and the `modules_to_save` train, and saving writes the
            adapter only. The student as given is saved first to `output_dir/base_model`, the base every adapter of
            the run records, so that the run folder loads on its own. A `PeftModel` student works the same without
            it.
        **kwargs: Passed on to `Trainer`.

    Example:
        ```python
        >>> args = DistillationConfig(output_dir="student", teacher_model_name_or_path="user/lad-teacher")
        >>> DistillationTrainer(model=student, args=args, train_dataset=train, eval_dataset=val).train()
        ```
    """

    method = (
        "An image-only student distilled from a frozen teacher (paper Eq. 8): cross-entropy on the labels plus a "
        "knowledge-distillation loss towards the teacher's logits. With a LAD teacher (Label Assisted Distillation, "
        "Qiu et al., ECCV 2024), the teacher reads the image and the noised label; the student only the image."
    )
    method_tag = "knowledge-distillation"

    def __init__(
        self,
        model=None,
        teacher_model: PreTrainedModel | str | os.PathLike | None = None,
        args: DistillationConfig | None = None,
        peft_config: PeftConfig | None = None,
        **kwargs,
    ):
        args = args if args is not None else DistillationConfig(output_dir="trainer_output")
        if not isinstance(args, DistillationConfig):
            raise TypeError(f"DistillationTrainer takes a DistillationConfig as args, got {type(args).__name__}.")
        teacher_model = teacher_model if teacher_model is not None else args.teacher_model_name_or_path
        if teacher_model is None:
            raise ValueError(
                "DistillationTrainer needs a teacher: pass teacher_model= (a model, a Hub id or a folder) or set "
                "DistillationConfig.teacher_model_name_or_path."
            )
        if isinstance(teacher_model, str | os.PathLike):
            teacher_model = load_segmentation_model(os.fspath(teacher_model), "the teacher")
        check_same_label_set(model.config, teacher_model.config)
        if peft_config is not None:
            model = apply_lora(self._save_lora_base(model, args), peft_config)
        if isinstance(model, PeftModel):
            trainable, total = model.get_nb_trainable_parameters()
            logger.warning(
                f"Student with adapters: {trainable:,} of {total:,} parameters train "
                f"({100 * trainable / total:.2f}%): the adapters and the modules to save."
            )
        super().__init__(model=model, args=args, **kwargs)

        teacher_model.requires_grad_(False).eval()
        if args.channels_last:
            teacher_model = teacher_model.to(memory_format=torch.channels_last)
        self.teacher_config = teacher_model.config
        self.teacher = self.accelerator.prepare_model(teacher_model, evaluation_mode=True)
        is_lad = is_lad_teacher(self.teacher_config)
        self.teacher_noiser = LabelNoiser.from_config(self.teacher_config) if is_lad else None
        if is_lad and self.teacher_noiser.num_labels != self.teacher_config.num_labels:
            raise ValueError(
                f"The teacher {self._teacher_name()} records a label noiser for {self.teacher_noiser.num_labels} "
                f"classes but predicts {self.teacher_config.num_labels}: its config is inconsistent; re-record its "
                "noiser (config.label_noiser) with the teacher's class count."
            )
        self.student_config = model.config
        self.auxiliary_loss_weight = (
            args.auxiliary_loss_weight
            if args.auxiliary_loss_weight is not None
            else getattr(model.config, "auxiliary_loss_weight", 0.0)
        )
        if args.kd.uses_student_features:
            self.student_classifier = _student_classifier(model)
            self.feature_covariance = ClassFeatureCovariance(
                model.config.num_labels, self.student_classifier.in_channels, args.ignore_index
            ).to(self.args.device)
            # lad_hf models return their classifier's input; other models' is kept by a hook while training runs.
            self.student_returns_features = isinstance(_base_model(model), LadSegPreTrainedModel)
            self._hooked_features = None

    @staticmethod
    def _save_lora_base(model: PreTrainedModel, args: DistillationConfig) -> PreTrainedModel:
        """Save the student as given to `output_dir/base_model` (the main process; the others wait), and name it
        the model's source: the adapters record it as their base."""
        base_dir = os.path.abspath(os.path.join(args.output_dir, "base_model"))
        with args.main_process_first(local=False, desc="saving the base model"):
            if args.process_index == 0:
                model.save_pretrained(base_dir)
        model.name_or_path = model.config._name_or_path = base_dir
        return model

    def card_settings(self) -> dict:
        settings = {
            "teacher": self._teacher_name(),
            "teacher type": "LAD teacher (label channel)" if self.teacher_noiser is not None else "image-only",
            "KD loss": self.args.kd_loss,
            "KD loss is": self.args.kd.description,
            "KD weight beta": self.args.kd_weight,
            "KD temperature": self.args.kd_temperature,
            "task (cross-entropy) weight": self.args.task_weight,
            **(
                {"FAKD ratio": self.args.fakd_ratio, "FAKD warm-up steps": self.args.fakd_warmup_steps or "the run"}
                if self.args.kd.uses_student_features
                else {}
            ),
            "auxiliary head weight": self.auxiliary_loss_weight,
        }
        if self.teacher_noiser is not None:
            settings["teacher's label noise alpha"] = self.teacher_noiser.alpha
            settings["teacher's random class codes"] = self.teacher_noiser.class_noise
        if isinstance(self.model, PeftModel):
            peft_config = self.model.peft_config["default"]
            trainable, total = self.model.get_nb_trainable_parameters()
            settings["adapters"] = peft_config.peft_type.value
            if isinstance(peft_config, LoraConfig):
                settings["adapters"] += f" r={peft_config.r}, alpha={peft_config.lora_alpha}"
            settings["adapter targets"] = str(peft_config.target_modules)
            settings["trained in full"] = str(sorted(peft_config.modules_to_save or []))
            settings["trainable parameters"] = f"{trainable:,} of {total:,}"
        return settings

    def train(self, *args, **kwargs):
        hook = contextlib.nullcontext()
        if self.args.kd.uses_student_features and not self.student_returns_features:
            hook = _pre_hook(self.student_classifier, self._keep_student_features)
        with hook:  # removed after training: the student keeps no hook
            return super().train(*args, **kwargs)

    def _keep_student_features(self, module, inputs) -> None:
        self._hooked_features = inputs[0]

    def task_loss(self, outputs, labels: torch.Tensor) -> torch.Tensor:
        """The student's cross-entropy, plus its auxiliary head's where it returns `auxiliary_logits`, and STDC-Seg's
        detail loss where it returns `detail_logits`: the loss the student computes itself, given its labels."""
        loss = segmentation_cross_entropy(outputs.logits, labels, self.args.ignore_index)
        auxiliary_logits = outputs.get("auxiliary_logits")
        if auxiliary_logits is not None and self.auxiliary_loss_weight > 0:
            auxiliary = segmentation_cross_entropy(auxiliary_logits, labels, self.args.ignore_index)
            loss = loss + self.auxiliary_loss_weight * auxiliary
        detail_logits = outputs.get("detail_logits")
        if detail_logits is not None:
            loss = loss + self.student_config.detail_loss_weight * detail_aggregation_loss(detail_logits, labels)
        return loss

    @torch.no_grad()
    def teacher_logits(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.teacher_noiser is not None:
            generator = self.step_generator(labels.device)
            pixel_values = build_teacher_inputs(pixel_values, labels, self.teacher_noiser, generator=generator)
        return self.teacher(pixel_values=pixel_values).logits

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pixel_values, labels = inputs["pixel_values"], inputs["labels"]
        kd, temperature = self.args.kd, self.args.kd_temperature
        if kd.uses_student_features and self.student_returns_features:
            outputs = model(pixel_values=pixel_values, output_hidden_states=True)  # the student sees the image only
            features = outputs.decoder_features
        else:
            outputs = model(pixel_values=pixel_values)
            features = self._hooked_features if kd.uses_student_features else None
        teacher_logits = self.teacher_logits(pixel_values, labels)
        loss_task = self.task_loss(outputs, labels)
        inputs = {}
        if kd.uses_labels:
            inputs.update(labels=labels, ignore_index=self.args.ignore_index)
        if kd.uses_student_features:
            inputs["variance"] = self.fakd_variance(features, labels, teacher_logits.shape[-2:])
        loss_kd = kd.function(outputs.logits, teacher_logits, temperature=temperature, **inputs)
        # Each term's share of the accumulated batch: CE is a mean over labelled pixels, a KD loss that reads labels a
        # mean over labelled pixels of the teacher's grid, CWD a mean over images.
        if kd.uses_labels:
            kd_share = self.pixel_share(labels, num_items_in_batch, teacher_logits.shape[-2:])
        else:
            kd_share = self.image_share(labels, num_items_in_batch)
        task_share = self.pixel_share(labels, num_items_in_batch)
        loss = self.args.task_weight * loss_task * task_share + self.args.kd_weight * loss_kd * kd_share
        self.log_loss_components(loss_task=loss_task, loss_kd=loss_kd)
        return (loss, outputs) if return_outputs else loss

    def fakd_variance(self, features: torch.Tensor, labels: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """FAKD (lad_hf.fakd): update the class covariance with this forward's classifier features, then the variance
        of each student logit under augmentations of strength `cosine_ratio(step)`, at the teacher's `size`."""
        self.feature_covariance.update(features, resize_labels(labels, features.shape[-2:]))
        warmup = self.args.fakd_warmup_steps or self.state.max_steps
        ratio = cosine_ratio(self.state.global_step, warmup, self.args.fakd_ratio)
        weight = self.student_classifier.weight.flatten(1)  # (K, D)
        return augmentation_variance(
            weight, self.feature_covariance.covariance, resize_labels(labels, size), ratio, self.args.ignore_index
        )

    def training_state(self) -> dict[str, torch.Tensor]:
        # FAKD's class covariance is estimated over the whole run: a resumed run continues the estimate.
        if not self.args.kd.uses_student_features:
            return {}
        return {f"feature_covariance.{k}": v for k, v in self.feature_covariance.state_dict().items()}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        if self.args.kd.uses_student_features:
            prefix = "feature_covariance."
            self.feature_covariance.load_state_dict({k.removeprefix(prefix): v for k, v in state.items()})

    def preflight_forward(self, model, batch: dict) -> None:
        # The student on the image, the teacher as it will be run (with a noise generator of its own), and the KD loss
        # between their logits: a teacher of other classes or resolution fails here.
        pixel_values, labels = batch["pixel_values"], batch["labels"]
        student_logits = model(pixel_values=pixel_values).logits
        teacher_inputs = pixel_values
        if self.teacher_noiser is not None:
            generator = torch.Generator(device=labels.device).manual_seed(0)
            teacher_inputs = build_teacher_inputs(pixel_values, labels, self.teacher_noiser, generator=generator)
        teacher_logits = self.teacher(pixel_values=teacher_inputs).logits
        kd = self.args.kd
        if not kd.uses_student_features:
            inputs = dict(labels=labels, ignore_index=self.args.ignore_index) if kd.uses_labels else {}
            kd.function(student_logits, teacher_logits, temperature=self.args.kd_temperature, **inputs)

    def _teacher_name(self) -> str:
        return self.args.teacher_model_name_or_path or self.teacher_config.name_or_path or "(given in code)"

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # The student's evaluation, also without labels in its forward: the loss is computed here.
        pixel_values, labels = inputs["pixel_values"], inputs["labels"]
        with torch.no_grad(), self.compute_loss_context_manager():
            logits = model(pixel_values=pixel_values).logits.detach()
            loss = segmentation_cross_entropy(logits, labels, self.args.ignore_index)
        return (loss, None, None) if prediction_loss_only else (loss, logits, labels)


@contextlib.contextmanager
def _pre_hook(module: torch.nn.Module, hook):
    """`hook` on `module`'s inputs while the block runs."""
    handle = module.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()

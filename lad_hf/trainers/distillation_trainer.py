"""Distilling a frozen teacher into a student that sees only the image (paper Eq. 8)."""

import contextlib
import os

import torch
from peft import LoraConfig, PeftConfig, PeftModel
from transformers import PreTrainedModel, TrainerCallback
from transformers.utils import logging

from ..distillation import KD_LOSSES, KDInputs
from ..hub import load_segmentation_model
from ..label_channel import LabelNoiser, build_teacher_inputs, is_lad_teacher
from ..lora import apply_lora
from ..models.lad_seg.modeling_lad_seg import LadSegPreTrainedModel
from ..models.losses import detail_aggregation_loss, segmentation_cross_entropy
from .distillation_config import DistillationConfig
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


def _classifier(model, who: str, kd_loss: str) -> torch.nn.Conv2d:
    """A model's final classifier, a 1x1 convolution at `decode_head.classifier` (lad_hf models, Segformer), whose
    input is the feature map that feature-based KD losses read."""
    base = _base_model(model)
    classifier = getattr(getattr(base, "decode_head", None), "classifier", None)
    if not isinstance(classifier, torch.nn.Conv2d) or classifier.kernel_size != (1, 1):
        raise ValueError(
            f"kd_loss={kd_loss!r} reads the features of the {who}'s classifier, a 1x1 Conv2d at "
            f"decode_head.classifier; {type(base).__name__} has none. Use a method that reads logits only with this "
            f"{who}: {_logit_methods(who)}."
        )
    return classifier


def _logit_methods(who: str) -> str:
    reads = "reads_student_features" if who == "student" else "reads_teacher_features"
    return ", ".join(f"kd_loss={name!r}" for name, method in KD_LOSSES.items() if not getattr(method, reads))


class DistillationTrainer(SegmentationTrainer):
    r"""Trains a student from its labels and a frozen teacher's logits (paper Eq. 8):

        L_S = task_weight * CE(O_S, y) + kd_weight * KD(O_S, O_T)

    The student sees the image only; its forward never receives labels. If the teacher's config records a label
    noiser (a LAD teacher), the teacher reads the image plus the batch's labels noised with it, exactly as it was
    trained; otherwise it is a conventional teacher on the image. `KD` is the method `args.kd_loss` names in
    `lad_hf.distillation.KD_LOSSES`, a `DistillationObjective`: the sum of its terms, each logged apart beside
    `loss_task` and `loss_kd`.

    The trainer asks the method what it needs and never tests its name: the input of both models' 1x1 classifiers
    where it reads them (lad_hf models return them; another model's are read by a hook on its
    `decode_head.classifier`), a generator per step, how its loss averages. What a method trains besides the student
    stays out of the saved model and is kept in checkpoints: parameters trained by the student's optimizer (CIRKD's
    projection head), a step of its own after each training step (SKD's and IFVD's discriminator), a first stage
    before the student's first step (MasKD's tokens).

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
        kd = args.kd
        self.student_classifier = None
        if kd.reads_student_features:
            self.student_classifier = _classifier(model, "student", args.kd_loss)
            # lad_hf models return their classifier's input; other models' is kept by a hook while training runs.
            self.student_returns_features = isinstance(_base_model(model), LadSegPreTrainedModel)
            self._hooked_features = None
        if kd.reads_teacher_features:
            teacher_base = self.accelerator.unwrap_model(self.teacher)
            self.teacher_classifier = _classifier(teacher_base, "teacher", args.kd_loss)
            self.teacher_returns_features = isinstance(teacher_base, LadSegPreTrainedModel)
        self.kd_objective = kd.from_args(
            args,
            model.config.num_labels,
            self.student_classifier.in_channels if kd.reads_student_features else None,
            self.teacher_classifier.in_channels if kd.reads_teacher_features else None,
        ).to(self.args.device)
        if self.kd_objective.student_parameters():
            self.add_callback(_ZeroGradients(self.kd_objective.student_parameters()))
        self._restored_from = None  # the checkpoint whose training state the method holds

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
            **self.kd_objective.card_settings(),
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

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, **kwargs):
        resume_from_checkpoint = self.checkpoint_to_resume(resume_from_checkpoint)
        # The method's work before the student's first step (MasKD's first stage) sees the method as the checkpoint
        # left it, and data and models that passed the preflight.
        self.preflight()
        if resume_from_checkpoint:
            self.restore_training_state(resume_from_checkpoint)
        self.kd_objective.before_training(self)
        hook = contextlib.nullcontext()
        if self.args.kd.reads_student_features and not self.student_returns_features:
            hook = _pre_hook(self.student_classifier, self._keep_student_features)
        with hook:  # removed after training: the student keeps no hook
            return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)

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

    def teacher_logits(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.teacher_outputs(pixel_values, labels)[0]

    @torch.no_grad()
    def teacher_outputs(
        self, pixel_values: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The teacher's logits, and its classifier's input features where the KD method reads them (else None). A
        LAD teacher reads the labels noised with `generator` (default: `step_generator`)."""
        if self.teacher_noiser is not None:
            generator = generator if generator is not None else self.step_generator(labels.device)
            pixel_values = build_teacher_inputs(pixel_values, labels, self.teacher_noiser, generator=generator)
        if not self.args.kd.reads_teacher_features:
            return self.teacher(pixel_values=pixel_values).logits, None
        if self.teacher_returns_features:
            outputs = self.teacher(pixel_values=pixel_values, output_hidden_states=True)
            return outputs.logits, outputs.decoder_features
        kept = []
        with _pre_hook(self.teacher_classifier, lambda module, inputs: kept.append(inputs[0])):
            logits = self.teacher(pixel_values=pixel_values).logits
        return logits, kept[-1]

    def student_outputs(self, model, pixel_values: torch.Tensor):
        """The student's outputs on the image alone, and its classifier's input features where the KD method reads
        them (else None)."""
        if not self.args.kd.reads_student_features:
            return model(pixel_values=pixel_values), None
        if self.student_returns_features:
            outputs = model(pixel_values=pixel_values, output_hidden_states=True)
            return outputs, outputs.decoder_features
        return model(pixel_values=pixel_values), self._hooked_features

    def kd_inputs(self, student_logits, teacher_logits, labels, student_features=None, teacher_features=None):
        """What the KD method reads at this step (`KDInputs`)."""
        several = self.accelerator.num_processes > 1
        return KDInputs(
            student_logits=student_logits,
            teacher_logits=teacher_logits,
            labels=labels,
            student_features=student_features,
            teacher_features=teacher_features,
            student_classifier=self.student_classifier,
            generator=self.step_generator(labels.device) if self.args.kd.draws_random else None,
            gather=self._gather_padded if several else None,
            step=self.state.global_step,
            max_steps=self.state.max_steps,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pixel_values, labels = inputs["pixel_values"], inputs["labels"]
        outputs, student_features = self.student_outputs(model, pixel_values)  # the student sees the image only
        teacher_logits, teacher_features = self.teacher_outputs(pixel_values, labels)
        loss_task = self.task_loss(outputs, labels)
        terms = self.kd_objective(
            self.kd_inputs(outputs.logits, teacher_logits, labels, student_features, teacher_features)
        )
        loss_kd = sum(terms.values())
        # Each term's share of the accumulated batch: CE is a mean over labelled pixels; the KD loss a mean over the
        # labelled pixels of the teacher's grid, or over images (or over all their pixels), as the method says.
        task_share = self.pixel_share(labels, num_items_in_batch)
        if self.args.kd.mean_over_labelled_pixels:
            kd_share = self.pixel_share(labels, num_items_in_batch, teacher_logits.shape[-2:])
        else:
            kd_share = self.image_share(labels, num_items_in_batch)
        loss = self.args.task_weight * loss_task * task_share + self.args.kd_weight * loss_kd * kd_share
        self.log_loss_components(
            loss_task=loss_task, loss_kd=loss_kd, **{name: v for name, v in terms.items() if name != "loss_kd"}
        )
        return (loss, outputs) if return_outputs else loss

    def training_state(self) -> dict:
        # The method's modules and statistics (FAKD's class covariance, CIRKD's memory and projection, SKD's
        # discriminator and its optimizer, MasKD's tokens): a resumed run continues them.
        return dict(self.kd_objective.state_dict())

    def load_training_state(self, state: dict) -> None:
        expected = self.kd_objective.state_dict()
        if not expected:
            return
        state = _upgrade_training_state(state)
        if set(state) != set(expected):
            raise ValueError(
                f"The checkpoint holds no state of the {self.args.kd_loss} method (it holds {sorted(state)[:3]}): it "
                "was written by a run with another kd_loss. Resume with that run's settings, or start anew."
            )
        self.kd_objective.load_state_dict(state)

    def restore_training_state(self, checkpoint: str) -> None:
        # `train` restores the method's state before its `before_training`; the Trainer's own resume, which follows,
        # would read the same file again (CIRKD's memory can take 512 MB).
        if checkpoint == self._restored_from:
            return
        super().restore_training_state(checkpoint)
        self._restored_from = checkpoint

    # -- What the methods train besides the student -------------------------------------------------------------------

    def create_optimizer(self, model=None):
        # Parameters a method trains with the student (CIRKD's projection head) go into the student's optimizer (and
        # its checkpoints).
        optimizer = super().create_optimizer(model)
        extra = self.kd_objective.student_parameters()
        known = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if extra and id(extra[0]) not in known:
            optimizer.add_param_group({"params": extra, "weight_decay": self.args.weight_decay})
        return optimizer

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        reduce = None
        if self.accelerator.num_processes > 1:
            reduce = lambda grad: self.accelerator.reduce(grad, reduction="mean")  # noqa: E731
            # Outside the DDP model: average their gradients here (the mean of means stays exact under GA).
            for parameter in self.kd_objective.student_parameters():
                if parameter.grad is not None:
                    parameter.grad = reduce(parameter.grad)
        self.log_loss_components(**self.kd_objective.after_backward(reduce))
        return loss

    def _gather_padded(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` from all processes, concatenated; an uneven last batch is padded (labels with the ignore index,
        which CIRKD's memory skips)."""
        pad = self.args.ignore_index if not tensor.is_floating_point() else 0
        return self.accelerator.gather(self.accelerator.pad_across_processes(tensor, dim=0, pad_index=pad))

    def preflight_forward(self, model, batch: dict) -> None:
        # The student on the image, the teacher as it will be run (with a noise generator of its own), and the KD
        # method's check of what it will read: a teacher of other classes or resolution fails here. Nothing is
        # updated: the methods' memories and statistics are left alone.
        pixel_values, labels = batch["pixel_values"], batch["labels"]
        kept = []
        hook = contextlib.nullcontext()
        if self.args.kd.reads_student_features and not self.student_returns_features:
            hook = _pre_hook(self.student_classifier, lambda module, inputs: kept.append(inputs[0]))
        with hook:
            outputs, student_features = self.student_outputs(model, pixel_values)
        student_features = kept[-1] if kept else student_features
        generator = torch.Generator(device=labels.device).manual_seed(0)
        teacher_logits, teacher_features = self.teacher_outputs(pixel_values, labels, generator=generator)
        inputs = KDInputs(outputs.logits, teacher_logits, labels, student_features, teacher_features)
        self.kd_objective.check(inputs)

    def _teacher_name(self) -> str:
        return self.args.teacher_model_name_or_path or self.teacher_config.name_or_path or "(given in code)"

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # The student's evaluation, also without labels in its forward: the loss is computed here.
        pixel_values, labels = inputs["pixel_values"], inputs["labels"]
        with torch.no_grad(), self.compute_loss_context_manager():
            logits = model(pixel_values=pixel_values).logits.detach()
            loss = segmentation_cross_entropy(logits, labels, self.args.ignore_index)
        return (loss, None, None) if prediction_loss_only else (loss, logits, labels)


def _upgrade_training_state(state: dict) -> dict:
    """A training state as lad_hf 0.1 wrote it, in today's layout: the objectives' state was nested under
    `kd_objective` and the discriminator's optimizer kept apart; FAKD's covariance is already flat."""
    if "kd_objective" not in state:
        return state
    upgraded = dict(state.pop("kd_objective"))
    if "discriminator_optimizer" in state:
        upgraded["adversarial._extra_state"] = state.pop("discriminator_optimizer")
    return {**state, **upgraded}


class _ZeroGradients(TrainerCallback):
    """Clears the gradients of parameters the optimizer steps but the Trainer does not zero (it zeroes the model's)."""

    def __init__(self, parameters: list[torch.nn.Parameter]):
        self.parameters = parameters

    def on_step_end(self, args, state, control, **kwargs):
        for parameter in self.parameters:
            parameter.grad = None


@contextlib.contextmanager
def _pre_hook(module: torch.nn.Module, hook):
    """`hook` on `module`'s inputs while the block runs."""
    handle = module.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()

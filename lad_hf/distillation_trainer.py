"""Distilling a frozen teacher into a student that sees only the image (paper Eq. 8)."""

import contextlib
import itertools
import os

import torch
from peft import LoraConfig, PeftConfig, PeftModel
from tqdm.auto import tqdm
from transformers import PreTrainedModel, TrainerCallback
from transformers.utils import logging

from .checkpoints import last_complete_checkpoint
from .distillation_config import DistillationConfig
from .fakd import ClassFeatureCovariance, augmentation_variance, cosine_ratio
from .hub import load_segmentation_model
from .kd_methods import MasKDObjective
from .label_channel import build_teacher_inputs
from .labels import resize_labels
from .lora import apply_lora
from .losses import detail_aggregation_loss, pixel_wise_divergence, segmentation_cross_entropy
from .modeling_lad_seg import LadSegPreTrainedModel
from .noising import LabelNoiser, is_lad_teacher
from .segmentation_trainer import TRAINING_STATE_NAME, SegmentationTrainer, content_generator


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
            f"decode_head.classifier; {type(base).__name__} has none. Use kd_loss='cwd', 'pixel_kd' or 'maskd' with "
            f"this {who}."
        )
    return classifier


class DistillationTrainer(SegmentationTrainer):
    r"""Trains a student from its labels and a frozen teacher's logits (paper Eq. 8):

        L_S = task_weight * CE(O_S, y) + kd_weight * KD(O_S, O_T)

    The student sees the image only; its forward never receives labels. If the teacher's config records a label
    noiser (a LAD teacher), the teacher reads the image plus the batch's labels noised with it, exactly as it was
    trained; otherwise it is a conventional teacher on the image. `KD` is one of `KD_LOSSES` (`args.kd_loss`).
    `loss_task` and `loss_kd` are logged apart.

    The comparison methods of the paper (`skd`, `ifvd`, `cirkd`, `maskd`; `lad_hf.kd_methods`) are objectives that
    also read both models' classifier features (lad_hf models return them; another model's are read by a hook on its
    `decode_head.classifier`): `KD` is then the sum of their terms, each logged apart. What they train besides the
    student stays out of it and out of the saved model, and is kept in checkpoints: CIRKD's projection head (trained
    by the student's optimizer) and memory, SKD's and IFVD's discriminator (its own optimizer step after each
    training step), MasKD's tokens (trained on the frozen teacher in a first stage, at the start of `train()`).

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
        if kd.uses_student_features:
            self.student_classifier = _classifier(model, "student", args.kd_loss)
            # lad_hf models return their classifier's input; other models' is kept by a hook while training runs.
            self.student_returns_features = isinstance(_base_model(model), LadSegPreTrainedModel)
            self._hooked_features = None
        if kd.function is not None and kd.uses_student_features:
            self.feature_covariance = ClassFeatureCovariance(
                model.config.num_labels, self.student_classifier.in_channels, args.ignore_index
            ).to(self.args.device)
        if kd.uses_teacher_features:
            teacher_base = self.accelerator.unwrap_model(self.teacher)
            self.teacher_classifier = _classifier(teacher_base, "teacher", args.kd_loss)
            self.teacher_returns_features = isinstance(teacher_base, LadSegPreTrainedModel)
        self.kd_objective = None
        if kd.objective is not None:
            self.kd_objective = kd.objective.from_args(
                args,
                model.config.num_labels,
                self.student_classifier.in_channels if kd.uses_student_features else None,
                self.teacher_classifier.in_channels if kd.uses_teacher_features else None,
            ).to(self.args.device)
            if self.accelerator.num_processes > 1 and hasattr(self.kd_objective, "gather"):
                self.kd_objective.gather = self._gather_padded
            if self.kd_objective.student_parameters():
                self.add_callback(_ZeroGradients(self.kd_objective.student_parameters()))
        self._adversarial_logits = None

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
                if self.args.kd.function is not None and self.args.kd.uses_student_features
                else {}
            ),
            **self._objective_settings(),
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

    def _objective_settings(self) -> dict:
        args = self.args
        if args.kd_loss in ("skd", "ifvd"):
            return {"adversarial term": args.skd_adversarial}
        if args.kd_loss == "cirkd":
            return {
                "CIRKD memory per class (pixels, regions)": f"{self.kd_objective.memory.pixel_queue.shape[1]}, "
                f"{args.cirkd_region_memory_size}",
                "CIRKD contrast per class (pixels, regions)": f"{args.cirkd_pixel_contrast_size}, "
                f"{args.cirkd_region_contrast_size}",
                "CIRKD anchors per step": args.cirkd_max_anchors,
            }
        if args.kd_loss == "maskd":
            return {
                "MasKD tokens": args.maskd_tokens,
                "MasKD first stage": f"{args.maskd_mask_steps} steps, SGD lr {args.maskd_mask_learning_rate}",
            }
        return {}

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, **kwargs):
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(
                    f"resume_from_checkpoint=True, but {self.args.output_dir} holds no complete checkpoint."
                )
        if isinstance(self.kd_objective, MasKDObjective):
            self.preflight()
            if resume_from_checkpoint:  # the checkpoint's tokens: the first stage is done
                self._load_objective_state(resume_from_checkpoint)
            if not self.kd_objective.tokens_trained:
                self.train_mask_tokens()
        hook = contextlib.nullcontext()
        if self.args.kd.uses_student_features and not self.student_returns_features:
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
        """The teacher's logits, and its classifier's input features where the KD loss reads them (else None). A LAD
        teacher reads the labels noised with `generator` (default: `step_generator`)."""
        if self.teacher_noiser is not None:
            generator = generator if generator is not None else self.step_generator(labels.device)
            pixel_values = build_teacher_inputs(pixel_values, labels, self.teacher_noiser, generator=generator)
        if not self.args.kd.uses_teacher_features:
            return self.teacher(pixel_values=pixel_values).logits, None
        if self.teacher_returns_features:
            outputs = self.teacher(pixel_values=pixel_values, output_hidden_states=True)
            return outputs.logits, outputs.decoder_features
        kept = []
        with _pre_hook(self.teacher_classifier, lambda module, inputs: kept.append(inputs[0])):
            logits = self.teacher(pixel_values=pixel_values).logits
        return logits, kept[-1]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pixel_values, labels = inputs["pixel_values"], inputs["labels"]
        kd, temperature = self.args.kd, self.args.kd_temperature
        if kd.uses_student_features and self.student_returns_features:
            outputs = model(pixel_values=pixel_values, output_hidden_states=True)  # the student sees the image only
            features = outputs.decoder_features
        else:
            outputs = model(pixel_values=pixel_values)
            features = self._hooked_features if kd.uses_student_features else None
        teacher_logits, teacher_features = self.teacher_outputs(pixel_values, labels)
        loss_task = self.task_loss(outputs, labels)
        task_share = self.pixel_share(labels, num_items_in_batch)
        # Each term's share of the accumulated batch: CE is a mean over labelled pixels, a KD loss that reads labels a
        # mean over labelled pixels of the teacher's grid, CWD and the objectives' terms means over images (or over
        # all their pixels).
        if self.kd_objective is not None:
            generator = self.step_generator(labels.device)  # for the objective's sampling (CIRKD's anchors)
            terms = self.kd_objective(
                outputs.logits, teacher_logits, features, teacher_features, labels, temperature, generator
            )
            loss_kd = sum(terms.values())
            kd_share = self.image_share(labels, num_items_in_batch)
            if self.kd_objective.adversarial is not None:  # its discriminator's step follows this training step
                self._adversarial_logits = (outputs.logits.detach(), teacher_logits)
        else:
            terms, inputs = {}, {}
            if kd.uses_labels:
                inputs.update(labels=labels, ignore_index=self.args.ignore_index)
            if kd.uses_student_features:
                inputs["variance"] = self.fakd_variance(features, labels, teacher_logits.shape[-2:])
            loss_kd = kd.function(outputs.logits, teacher_logits, temperature=temperature, **inputs)
            if kd.uses_labels:
                kd_share = self.pixel_share(labels, num_items_in_batch, teacher_logits.shape[-2:])
            else:
                kd_share = self.image_share(labels, num_items_in_batch)
        loss = self.args.task_weight * loss_task * task_share + self.args.kd_weight * loss_kd * kd_share
        self.log_loss_components(loss_task=loss_task, loss_kd=loss_kd, **terms)
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

    def training_state(self) -> dict:
        # FAKD's class covariance is estimated over the whole run: a resumed run continues the estimate. The
        # objectives' modules (memory, projection, discriminator, tokens) and the discriminator's optimizer likewise.
        state = {}
        if hasattr(self, "feature_covariance"):
            state.update({f"feature_covariance.{k}": v for k, v in self.feature_covariance.state_dict().items()})
        if self.kd_objective is not None:
            state["kd_objective"] = self.kd_objective.state_dict()
            if self.kd_objective.adversarial is not None:
                state["discriminator_optimizer"] = self.kd_objective.adversarial.optimizer.state_dict()
        return state

    def load_training_state(self, state: dict) -> None:
        if hasattr(self, "feature_covariance"):
            prefix = "feature_covariance."
            covariance = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
            self.feature_covariance.load_state_dict(covariance)
        if self.kd_objective is not None:
            if "kd_objective" not in state:
                raise ValueError(
                    f"The checkpoint holds no state of the {self.args.kd_loss} objective: it was written by a run "
                    "with another kd_loss. Resume with that run's settings, or start anew."
                )
            self.kd_objective.load_state_dict(state["kd_objective"])
            if self.kd_objective.adversarial is not None:
                self.kd_objective.adversarial.optimizer.load_state_dict(state["discriminator_optimizer"])

    def _load_objective_state(self, checkpoint: str) -> None:
        path = os.path.join(checkpoint, TRAINING_STATE_NAME)
        if os.path.isfile(path):
            self.load_training_state(torch.load(path, map_location=self.args.device, weights_only=True))

    # -- What the objectives train besides the student ----------------------------------------------------------------

    def create_optimizer(self, model=None):
        # CIRKD's projection head trains with the student, in the student's optimizer (and its checkpoints).
        optimizer = super().create_optimizer(model)
        extra = self.kd_objective.student_parameters() if self.kd_objective is not None else []
        known = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if extra and id(extra[0]) not in known:
            optimizer.add_param_group({"params": extra, "weight_decay": self.args.weight_decay})
        return optimizer

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.kd_objective is None:
            return loss
        several = self.accelerator.num_processes > 1
        if several:  # outside the DDP model: average their gradients here (the mean of means stays exact under GA)
            for parameter in self.kd_objective.student_parameters():
                if parameter.grad is not None:
                    parameter.grad = self.accelerator.reduce(parameter.grad, reduction="mean")
        if self._adversarial_logits is not None:
            student_logits, teacher_logits = self._adversarial_logits
            self._adversarial_logits = None
            reduce = (lambda grad: self.accelerator.reduce(grad, reduction="mean")) if several else None
            loss_d = self.kd_objective.adversarial.discriminator_step(student_logits, teacher_logits, reduce)
            self.log_loss_components(loss_discriminator=loss_d)
        return loss

    def _gather_padded(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` from all processes, concatenated; an uneven last batch is padded (labels with the ignore index,
        which CIRKD's memory skips)."""
        pad = self.args.ignore_index if not tensor.is_floating_point() else 0
        return self.accelerator.gather(self.accelerator.pad_across_processes(tensor, dim=0, pad_index=pad))

    def train_mask_tokens(self) -> None:
        """MasKD's first stage: train the receptive tokens on the frozen teacher's logits (the teacher as it is run
        in distillation: a LAD teacher with noised labels), `maskd_mask_steps` steps of SGD (momentum 0.9, weight
        decay 1e-3, learning rate `maskd_mask_learning_rate` with polynomial decay, power 0.9), as MasKD's
        `train_mask_module.py`; then freeze them. Random state of the run is left as it was: the student's training
        is the same as without this stage."""
        args, objective = self.args, self.kd_objective
        steps = args.maskd_mask_steps
        tokens = objective.tokens
        optimizer = torch.optim.SGD(
            tokens.parameters(), lr=args.maskd_mask_learning_rate, momentum=0.9, weight_decay=1e-3
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (1 - step / max(steps, 1)) ** 0.9)
        losses = []
        with torch.random.fork_rng(devices=[]):
            batches = itertools.chain.from_iterable(itertools.repeat(self.get_train_dataloader()))
            progress = tqdm(
                range(steps), desc="MasKD tokens", disable=args.disable_tqdm or not self.is_local_process_zero()
            )
            for step in progress:
                batch = self._prepare_inputs(next(batches))
                pixel_values, labels = batch["pixel_values"], batch["labels"]
                generator = content_generator(labels, f"maskd/{args.seed}/{args.process_index}/{step}")
                with self.accelerator.autocast():
                    teacher_logits, _ = self.teacher_outputs(pixel_values, labels, generator=generator)
                loss = objective.stage_one_loss(teacher_logits, labels, args.ignore_index)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.accelerator.num_processes > 1:
                    tokens.tokens.grad = self.accelerator.reduce(tokens.tokens.grad, reduction="mean")
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
                if step % 50 == 0:
                    progress.set_postfix(loss=f"{loss.item():.4f}")
        tokens.requires_grad_(False)
        objective.tokens_trained.fill_(True)
        if losses:
            logger.warning(
                f"MasKD first stage: {steps} steps on the frozen teacher, loss {losses[0]:.4f} -> {losses[-1]:.4f}."
            )

    def preflight_forward(self, model, batch: dict) -> None:
        # The student on the image, the teacher as it will be run (with a noise generator of its own), and the KD loss
        # between their logits (or, for an objective, the features it reads): a teacher of other classes or
        # resolution fails here. Nothing is updated: the objectives' memories and statistics are left alone.
        pixel_values, labels = batch["pixel_values"], batch["labels"]
        kd = self.args.kd
        kept = []
        hook = contextlib.nullcontext()
        if kd.uses_student_features and not self.student_returns_features:
            hook = _pre_hook(self.student_classifier, lambda module, inputs: kept.append(inputs[0]))
        returned = kd.uses_student_features and self.student_returns_features
        with hook:
            outputs = model(pixel_values=pixel_values, **({"output_hidden_states": True} if returned else {}))
        student_logits = outputs.logits
        generator = torch.Generator(device=labels.device).manual_seed(0)
        teacher_logits, teacher_features = self.teacher_outputs(pixel_values, labels, generator=generator)
        if kd.function is not None and not kd.uses_student_features:
            inputs = dict(labels=labels, ignore_index=self.args.ignore_index) if kd.uses_labels else {}
            kd.function(student_logits, teacher_logits, temperature=self.args.kd_temperature, **inputs)
        elif kd.objective is not None:
            pixel_wise_divergence(student_logits, teacher_logits)  # the same classes, sizes that resize
            if kd.uses_student_features and kd.uses_teacher_features:
                student_features = outputs.decoder_features if returned else kept[-1]
                if student_features.shape[0] != teacher_features.shape[0] or student_features.ndim != 4:
                    raise ValueError(
                        f"kd_loss={self.args.kd_loss!r}: the student's classifier features "
                        f"{tuple(student_features.shape)} and the teacher's {tuple(teacher_features.shape)} are not "
                        "both (batch, channels, height, width) maps of the same batch."
                    )

    def _teacher_name(self) -> str:
        return self.args.teacher_model_name_or_path or self.teacher_config.name_or_path or "(given in code)"

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # The student's evaluation, also without labels in its forward: the loss is computed here.
        pixel_values, labels = inputs["pixel_values"], inputs["labels"]
        with torch.no_grad(), self.compute_loss_context_manager():
            logits = model(pixel_values=pixel_values).logits.detach()
            loss = segmentation_cross_entropy(logits, labels, self.args.ignore_index)
        return (loss, None, None) if prediction_loss_only else (loss, logits, labels)


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

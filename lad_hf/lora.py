"""LoRA for DINOv2 students (the paper's foundation-model experiment): a peft `LoraConfig`, and its checks."""

import re

from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.tuners_utils import check_target_module_exists
from torch import nn


__all__ = ["apply_lora", "dinov2_lora_config"]

# transformers 5.x names DINOv2's attention projections q_proj / k_proj / v_proj / o_proj ("query" / "value" of
# older versions match nothing). The pattern is anchored to the backbone, so that no head layer gets an adapter.
DINOV2_ATTENTION = r"backbone\.encoder\.layer\.\d+\.attention\.(q_proj|k_proj|v_proj|o_proj)"


def dinov2_lora_config(
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.1,
    target_modules: str = DINOV2_ATTENTION,
    modules_to_save: list[str] | None = None,
) -> LoraConfig:
    """A peft `LoraConfig` for a `LadSegForSemanticSegmentation` on a DINOv2 backbone.

    Args:
        r (`int`, *optional*, defaults to 8): LoRA rank.
        alpha (`int`, *optional*, defaults to 16): LoRA scaling numerator (`lora_alpha`).
        dropout (`float`, *optional*, defaults to 0.1): Dropout on the LoRA path.
        target_modules (`str`, *optional*): A regex over module names (peft matches it in full); by default the
            attention projections of the backbone's layers.
        modules_to_save (`list[str]`, *optional*, defaults to `["decode_head"]`): Modules trained in full and saved
            with the adapter: the head.

    Example:
        ```python
        >>> config = LadSegConfig(backbone="facebook/dinov2-small", use_pretrained_backbone=True, decode_head="linear")
        >>> student = LadSegForSemanticSegmentation(config)
        >>> trainer = DistillationTrainer(model=student, peft_config=dinov2_lora_config(r=8), args=args, ...)
        ```
    """
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        modules_to_save=modules_to_save if modules_to_save is not None else ["decode_head"],
    )


def _module_name_patterns(model: nn.Module) -> list[str]:
    """The distinct names of the model's Linear and Conv layers, with layer numbers replaced by N."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear | nn.Conv2d)]
    return sorted({re.sub(r"\.\d+\.", ".N.", name) for name in names})


def apply_lora(model: nn.Module, peft_config: LoraConfig) -> PeftModel:
    """`peft.get_peft_model`, after checking that the targets match some layer: an error names the model's layers."""
    targets = [name for name, _ in model.named_modules() if name and check_target_module_exists(peft_config, name)]
    if not targets:
        patterns = _module_name_patterns(model)
        raise ValueError(
            f"The LoRA target_modules {peft_config.target_modules!r} match no layer of {type(model).__name__}. Its "
            f"Linear and Conv layers are named (N: a layer number): {patterns[:40]}. transformers 5.x names DINOv2's "
            "attention projections q_proj, k_proj, v_proj and o_proj; `lad_hf.dinov2_lora_config()` targets them."
        )
    return get_peft_model(model, peft_config)

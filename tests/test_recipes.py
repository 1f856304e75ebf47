"""The training recipes in configs/: each one parses with its command's dataclasses and builds its model (on the meta
device: no weights, no memory, no network), holds the paper's values, and together they cover the LAD paper's setups.
"""

import re
import socket
from functools import cache
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
import yaml
from transformers import Dinov2Config, MobileNetV2Config, MobileNetV2ForSemanticSegmentation

from lad_hf import (
    DistillationConfig,
    LadSegConfig,
    LadSegForSemanticSegmentation,
    LadTeacherConfig,
    SegmentationConfig,
    add_label_channel,
    apply_lora,
    dinov2_lora_config,
)
from lad_hf.commands.arguments import (
    DataArguments,
    LabelChannelArguments,
    LoraArguments,
    ModelArguments,
    parse_arguments,
)
from lad_hf.data import PRESETS
from lad_hf.distillation.sdes import SelfDecouplingStudent
from lad_hf.models.lad_seg.configuration_lad_seg import RESNET_BACKBONES
from lad_hf.trainers.self_distillation_config import SelfDistillationConfig


CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# The paper's ResNet setups; the DINOv2 + LoRA and the SDES recipes have tests of their own.
DINOV2_RECIPE = CONFIGS / "voc_dinov2_small_lora_distill.yaml"
SDES_RECIPE = CONFIGS / "cityscapes_deeplabv3_r18_sdes.yaml"
# DeepLabV3 on transformers' MobileNetV2 from the ImageNet classifier google/mobilenet_v2_1.0_224 (not the paper's).
MOBILENET_RECIPES = sorted(CONFIGS.glob("voc_deeplabv3_mobilenetv2_*.yaml"))
# The paper's STDC and OCRNet-HRNet setups (Tables 4 and 7).
ZOO_RECIPES = sorted([*CONFIGS.glob("cityscapes_stdc*.yaml"), *CONFIGS.glob("*_ocrnet_*.yaml")])
RECIPES = sorted(
    p
    for p in CONFIGS.glob("*.yaml")
    if p not in (DINOV2_RECIPE, SDES_RECIPE) and p not in MOBILENET_RECIPES and p not in ZOO_RECIPES
)
NAME = re.compile(
    r"(?P<dataset>[a-z0-9]+)_(?P<arch>[a-z0-9]+)_r(?P<depth>\d+)_"
    r"(?P<role>teacher|baseline|distill|(?:cwd|skd|ifvd|cirkd|maskd)_\w+)"
)
DATASETS = {
    "cityscapes": "cityscapes",
    "voc": "pascal_voc_aug",
    "ade20k": "ade20k",
    "cocostuff10k": "coco_stuff_10k",
    "cocostuff164k": "coco_stuff_164k",
}
HEADS = {"deeplabv3": "aspp", "pspnet": "psp", "fcn": "fcn", "ocrnet": "ocr"}
# role -> (lad-hf command, script, training arguments)
# role -> (lad-hf command, script, the dataclasses the command parses after ModelArguments and DataArguments)
COMMANDS = {
    "teacher": ("train-teacher", "train_teacher.py", (LadTeacherConfig, LabelChannelArguments)),
    "baseline": ("train", "train.py", (SegmentationConfig,)),
    "distill": ("distill", "distill.py", (DistillationConfig, LoraArguments)),
    **{
        method: ("distill", "distill.py", (DistillationConfig, LoraArguments))
        for method in ("cwd", "skd", "ifvd", "cirkd", "maskd")  # conventional KD from a bigger teacher
    },
}
COMPARISON_METHODS = ("skd", "ifvd", "cirkd", "maskd")  # the paper's Table 1 besides CWD
FLOAT_KEYS = (
    "learning_rate",
    "weight_decay",
    "label_noise_alpha",
    "label_scale",
    "consistency_weight",
    "consistency_temperature",
    "kd_weight",
    "kd_temperature",
    "maskd_mask_learning_rate",
)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Nothing here may reach the Hub: offline mode, and any connection attempt fails the test."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def refuse(self, address):
        raise AssertionError(f"a recipe test tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def split_name(path: Path) -> dict[str, str]:
    match = NAME.fullmatch(path.stem)
    assert match, f"{path.name}: recipes are named {{dataset}}_{{model}}_{{role}}.yaml"
    parts = match.groupdict()
    parts["kind"] = parts["role"].partition("_")[0]
    return parts


@cache
def parse(path: Path) -> tuple:
    """(model_args, data_args, training args, the command's other arguments (or None), raw YAML) of a recipe, parsed
    as its command parses it."""
    classes = COMMANDS[split_name(path)["kind"]][2]
    model_args, data_args, args, *others, _ = parse_arguments(
        (ModelArguments, DataArguments, *classes), ["--config", str(path)], "lad-hf", "recipe test"
    )
    return model_args, data_args, args, (others or [None])[0], yaml.safe_load(path.read_text())


def offline_backbone(backbone: str) -> str:
    """`microsoft/resnet-18` -> `resnet-18`, which LadSegConfig builds without a download."""
    name = backbone.removeprefix("microsoft/")
    assert name in RESNET_BACKBONES, f"backbone {backbone} cannot be built offline in this test"
    return name


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_header_names_its_commands(path):
    command, script, _ = COMMANDS[split_name(path)["kind"]]
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    assert f"lad-hf {command} --config configs/{path.name}" in header
    assert re.search(
        rf"accelerate launch --num_processes \d+ scripts/{script}[\s\\#]+--config configs/{path.name}", header
    )


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses_with_paper_values(path):
    parts = split_name(path)
    model_args, data_args, args, others, raw = parse(path)
    for key in FLOAT_KEYS:  # YAML reads 1e-3 as a string and 1 as an int: floats must be written as floats
        if key in raw:
            assert isinstance(raw[key], float), f"{key}: {raw[key]!r} is not a float"
    assert all(isinstance(x, float) for x in raw["scale_range"])
    assert all(isinstance(x, float) for x in raw["lr_scheduler_kwargs"].values())

    assert data_args.dataset_name == DATASETS[parts["dataset"]] and data_args.dataset_name in PRESETS
    assert data_args.crop_size == ([512, 1024] if parts["dataset"] == "cityscapes" else [512, 512])
    assert data_args.scale_range == [0.5, 2.0]
    assert model_args.model_name_or_path is None
    assert model_args.backbone == f"microsoft/resnet-{parts['depth']}" and model_args.use_pretrained_backbone
    assert model_args.decode_head == HEADS[parts["arch"]] and model_args.output_stride == 8

    assert args.output_dir == f"runs/{path.stem}"
    assert args.optim == "sgd" and args.optim_args == "momentum=0.9"
    assert args.lr_scheduler_type == "polynomial" and args.lr_scheduler_kwargs["power"] == 0.9
    assert args.learning_rate in (0.01, 0.02) and args.weight_decay in (0.0001, 0.0005)
    assert args.max_steps in (20000, 40000, 80000)
    assert args.per_device_train_batch_size * 4 == 16  # the papers' batch of 16, on 4 GPUs
    assert args.eval_strategy == "steps" and args.max_steps % args.eval_steps == 0
    if parts["kind"] == "teacher":
        assert others.label_noise_alpha == 0.01 and others.label_class_noise  # alpha, class-wise noising (Sec. 4.1)
        assert args.consistency_weight == 1.0 and args.consistency_loss == "cwd"  # lambda, CWD (Sec. 4.1)
        assert args.consistency_temperature == 4.0
    if parts["kind"] in ("distill", "cwd"):
        assert args.kd_loss == "cwd" and args.kd_weight == 3.0 and args.kd_temperature == 4.0  # CWD, beta (Sec. 4.1)
    if parts["kind"] in COMPARISON_METHODS:  # their code's weights, inside the objective
        assert args.kd_loss == parts["kind"] and args.kd_weight == 1.0 and args.kd_temperature == 1.0
        assert args.kd_weight == args.kd.default_weight and args.kd_temperature == args.kd.default_temperature
    if parts["kind"] == "cirkd":
        assert (args.cirkd_pixel_memory_size, args.cirkd_region_memory_size) == (20000, 2000)
        assert (args.cirkd_pixel_contrast_size, args.cirkd_region_contrast_size) == (4096, 1024)
    if parts["kind"] == "maskd":
        assert (args.maskd_tokens, args.maskd_mask_steps, args.maskd_mask_learning_rate) == (8, 10000, 0.1)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_builds_its_model(path):
    parts = split_name(path)
    model_args, data_args, args, others, _ = parse(path)
    preset = PRESETS[data_args.dataset_name]
    config = LadSegConfig(
        backbone=offline_backbone(model_args.backbone),
        use_pretrained_backbone=False,  # the recipe's ImageNet weights need the Hub
        decode_head=model_args.decode_head,
        output_stride=model_args.output_stride,
        decode_channels=model_args.decode_channels,
        id2label=preset.id2label,
        label2id={name: k for k, name in preset.id2label.items()},
    )
    with torch.device("meta"):
        model = LadSegForSemanticSegmentation(config)
        if parts["kind"] == "teacher":
            noiser = others.label_noiser(preset.num_labels, args.ignore_index)
            add_label_channel(model, noiser, others.label_stem_channels)
    assert all(p.is_meta for p in model.parameters())
    assert model.config.num_labels == preset.num_labels
    assert model.config.backbone_config.depths == RESNET_BACKBONES[f"resnet-{parts['depth']}"]["depths"]
    if parts["kind"] == "teacher":
        assert model.config.num_channels == 4 and model.config.label_noiser["alpha"] == 0.01
    else:
        assert model.config.num_channels == 3 and model.config.label_noiser is None


@pytest.mark.parametrize(
    "path",
    [p for p in RECIPES if split_name(p)["kind"] in ("distill", "cwd", *COMPARISON_METHODS)],
    ids=lambda p: p.stem,
)
def test_distill_recipe_names_the_output_of_a_teacher_recipe(path):
    parts = split_name(path)
    _, data_args, args, _, _ = parse(path)
    folder, _, teacher = args.teacher_model_name_or_path.partition("/")
    assert folder == "runs", "a teacher trained by a recipe is found in runs/<recipe name>"
    teacher_recipe = CONFIGS / f"{teacher}.yaml"
    assert teacher_recipe.is_file(), f"{args.teacher_model_name_or_path} is the output of no recipe in configs/"
    teacher_raw = yaml.safe_load(teacher_recipe.read_text())
    assert teacher_raw["output_dir"] == args.teacher_model_name_or_path
    assert teacher_raw["dataset_name"] == data_args.dataset_name
    if parts["kind"] == "distill":  # LAD: the teacher is the student's own model, with the label (Tables 1, 4, 5)
        assert teacher == f"{parts['dataset']}_{parts['arch']}_r{parts['depth']}_teacher"
    else:  # conventional KD from a bigger model trained on its own: cwd_r101 <- deeplabv3_r101_baseline
        assert teacher == f"{parts['dataset']}_deeplabv3_{parts['role'].partition('_')[2]}_baseline"


def test_recipes_cover_the_paper():
    names = {path.stem for path in RECIPES}
    roles = ("teacher", "baseline", "distill")
    wanted = {f"{d}_{m}_{r}" for d in DATASETS for m in ("deeplabv3_r18", "pspnet_r18") for r in roles}
    # Table 5: ResNet-50 models on ADE20K, VOC and COCO-Stuff; Table 4: FCN on Cityscapes.
    wanted |= {
        f"{d}_{m}_{r}"
        for d in ("voc", "ade20k", "cocostuff10k", "cocostuff164k")
        for m in ("deeplabv3_r50", "pspnet_r50")
        for r in roles
    }
    wanted |= {f"cityscapes_{m}_{r}" for m in ("fcn_r18", "fcn_r50") for r in roles}
    # Tables 1 and 4: conventional KD with CWD from DeepLabV3-R101.
    wanted |= {"cityscapes_deeplabv3_r101_baseline"}
    wanted |= {f"cityscapes_{m}_cwd_r101" for m in ("deeplabv3_r18", "pspnet_r18", "fcn_r18", "fcn_r50")}
    # Table 1: the comparison methods, on both students.
    wanted |= {f"cityscapes_{m}_{k}_r101" for m in ("deeplabv3_r18", "pspnet_r18") for k in COMPARISON_METHODS}
    assert sorted(wanted - names) == [] and sorted(names - wanted) == []  # each recipe is one of the paper's


def test_dinov2_lora_recipe_builds_its_student_and_adapters():
    model_args, data_args, args, lora_args, _ = parse_arguments(
        (ModelArguments, DataArguments, DistillationConfig, LoraArguments),
        ["--config", str(DINOV2_RECIPE)],
        "lad-hf",
        "test",
    )
    header = "".join(line for line in DINOV2_RECIPE.read_text().splitlines(keepends=True) if line.startswith("#"))
    assert f"lad-hf distill --config configs/{DINOV2_RECIPE.name}" in header
    assert model_args.backbone == "facebook/dinov2-small" and model_args.decode_head == "linear"
    assert data_args.dataset_name == "pascal_voc_aug" and data_args.crop_size[0] % 14 == 0
    assert args.kd_loss == "cwd" and args.kd_weight == 3.0
    assert (CONFIGS / f"{args.teacher_model_name_or_path.removeprefix('runs/')}.yaml").is_file()
    # facebook/dinov2-small's architecture (ViT-S/14), built offline on the meta device.
    backbone = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14)
    preset = PRESETS[data_args.dataset_name]
    with torch.device("meta"):
        student = LadSegForSemanticSegmentation(
            LadSegConfig(backbone=backbone, decode_head=model_args.decode_head, id2label=preset.id2label)
        )
        lora = dinov2_lora_config(r=lora_args.lora_r, alpha=lora_args.lora_alpha, dropout=lora_args.lora_dropout)
        student = apply_lora(student, lora)
    trainable, total = student.get_nb_trainable_parameters()
    adapters = 12 * 4 * 2 * 384 * lora_args.lora_r  # 12 layers, q/k/v/o, A and B
    head = 2 * 4 * 384 + 4 * 384 * preset.num_labels + preset.num_labels  # BN over 4 layers, 1x1 classifier
    assert trainable == adapters + head and total > 20_000_000


def test_sdes_recipe_parses_and_builds_the_student_with_its_experts():
    model_args, data_args, args, _ = parse_arguments(
        (ModelArguments, DataArguments, SelfDistillationConfig), ["--config", str(SDES_RECIPE)], "lad-hf", "test"
    )
    header = "".join(line for line in SDES_RECIPE.read_text().splitlines(keepends=True) if line.startswith("#"))
    assert f"lad-hf self-distill --config configs/{SDES_RECIPE.name}" in header
    assert args.num_experts == 2 and args.output_dir == f"runs/{SDES_RECIPE.stem}"
    preset = PRESETS[data_args.dataset_name]
    config = LadSegConfig(
        backbone=offline_backbone(model_args.backbone),
        decode_head=model_args.decode_head,
        output_stride=model_args.output_stride,
        id2label=preset.id2label,
    )
    with torch.device("meta"):
        student = LadSegForSemanticSegmentation(config)
        wrapped = SelfDecouplingStudent(student, args.num_experts)
    assert wrapped.num_parameters() == student.num_parameters() < sum(p.numel() for p in wrapped.parameters())


@pytest.mark.parametrize("path", MOBILENET_RECIPES, ids=lambda p: p.stem)
def test_mobilenet_v2_recipes_start_from_the_imagenet_classifier(path):
    role = path.stem.rpartition("_")[2]
    command, script, classes = COMMANDS[role]
    model_args, data_args, args, *others, _ = parse_arguments(
        (ModelArguments, DataArguments, *classes), ["--config", str(path)], "lad-hf", "test"
    )
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    assert f"lad-hf {command} --config configs/{path.name}" in header and f"scripts/{script}" in header
    assert model_args.model_name_or_path == "google/mobilenet_v2_1.0_224" and model_args.output_stride == 8
    assert args.output_dir == f"runs/{path.stem}" and data_args.dataset_name == "pascal_voc_aug"
    if role == "distill":
        assert args.teacher_model_name_or_path == "runs/voc_deeplabv3_mobilenetv2_teacher"
        assert args.kd_loss == "cwd" and args.kd_weight == 3.0
    # google/mobilenet_v2_1.0_224's architecture, built offline on the meta device with the recipe's head.
    preset = PRESETS[data_args.dataset_name]
    config = MobileNetV2Config(output_stride=model_args.output_stride, id2label=preset.id2label)
    with torch.device("meta"):
        model = MobileNetV2ForSemanticSegmentation(config)
        if role == "teacher":
            add_label_channel(model, others[0].label_noiser(preset.num_labels, args.ignore_index))
    assert model.config.num_labels == preset.num_labels
    assert model.config.num_channels == (4 if role == "teacher" else 3)


# Table 4 (None / CWD / LAD) and Table 7 (teacher -> student), with the conventional teachers of Table 4.
ZOO_PAPER = {
    "stdc1": ("stdc1", "stdc", "cwd_r101", "cityscapes_deeplabv3_r101_baseline"),
    "stdc2": ("stdc2", "stdc", "cwd_r101", "cityscapes_deeplabv3_r101_baseline"),
    "ocrnet_w18s": ("hrnet-w18-small", "ocr", "cwd_w48", "cityscapes_ocrnet_w48_baseline"),
    "ocrnet_w18": ("hrnet-w18", "ocr", "cwd_w48", "cityscapes_ocrnet_w48_baseline"),
}


def zoo_recipe_parts(path: Path) -> tuple[str, str]:
    """(model, role) of a zoo recipe: `cityscapes_{model}_{role}.yaml`."""
    match = re.fullmatch(r"(cityscapes|voc)_(stdc[12]|ocrnet_w18s|ocrnet_w18|ocrnet_w48)_(.+)", path.stem)
    assert match, path.name
    return match.group(2), match.group(3)


def test_zoo_recipes_cover_tables_4_and_7():
    expected = {
        f"cityscapes_{model}_{role}"
        for model, (*_, cwd, _) in ZOO_PAPER.items()
        for role in ("teacher", "baseline", "distill", cwd)
    }
    expected |= {
        "cityscapes_ocrnet_w48_baseline",
        "cityscapes_stdc2_distill_from_stdc1",
        "cityscapes_stdc1_distill_from_stdc2",
        "voc_ocrnet_w48_teacher",  # the DINOv2 experiment's teacher
    }
    assert {p.stem for p in ZOO_RECIPES} == expected


@pytest.mark.parametrize("path", ZOO_RECIPES, ids=lambda p: p.stem)
def test_zoo_recipe_parses_and_builds_its_model(path):
    model, role = zoo_recipe_parts(path)
    kind = "teacher" if role == "teacher" else "baseline" if role == "baseline" else "distill"
    command, script, classes = COMMANDS[kind]
    model_args, data_args, args, *others, raw = parse_arguments(
        (ModelArguments, DataArguments, *classes), ["--config", str(path)], "lad-hf", "recipe test"
    )
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    assert f"lad-hf {command} --config configs/{path.name}" in header and f"scripts/{script}" in header
    voc = path.stem.startswith("voc_")
    assert data_args.dataset_name == ("pascal_voc_aug" if voc else "cityscapes")
    assert data_args.crop_size == ([512, 512] if voc else [512, 1024])
    assert args.output_dir == f"runs/{path.stem}" and args.max_steps in (40000, 60000, 80000)
    backbone, head = {**ZOO_PAPER, "ocrnet_w48": ("hrnet-w48", "ocr")}[model][:2]
    assert model_args.backbone == backbone and model_args.decode_head == head
    if kind == "teacher":
        assert others[0].label_noise_alpha == 0.01 and args.consistency_weight == 1.0  # [P] Sec. 4.1
    if kind == "distill":
        assert args.kd_loss == "cwd" and args.kd_weight == 3.0  # [P] Sec. 4.1
        teacher = args.teacher_model_name_or_path.removeprefix("runs/")
        assert (CONFIGS / f"{teacher}.yaml").is_file()  # a recipe trains the teacher
        if role.startswith("cwd"):
            assert teacher == ZOO_PAPER[model][3]
        elif role == "distill":
            assert teacher == f"cityscapes_{model}_teacher"  # LAD: the student's own model, with the label
        else:  # Table 7: the other STDC's LAD teacher
            assert teacher == f"cityscapes_{role.removeprefix('distill_from_')}_teacher"
    preset = PRESETS[data_args.dataset_name]
    config = LadSegConfig(
        backbone=model_args.backbone,
        decode_head=model_args.decode_head,
        decode_channels=model_args.decode_channels,
        id2label=preset.id2label,
    )
    with torch.device("meta"):
        built = LadSegForSemanticSegmentation(config)
        if kind == "teacher":
            add_label_channel(built, others[0].label_noiser(preset.num_labels, args.ignore_index))
    assert built.config.num_labels == preset.num_labels and built.config.num_channels == (
        4 if kind == "teacher" else 3
    )
    assert (built.detail_head is not None) == (head == "stdc")

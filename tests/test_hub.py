"""Publishing and loading LAD teachers, students, adapters and datasets through the Hub API, against a local
Hub-compatible server (`local_hub`, tests/hub_server.py): the same code paths as with huggingface.co."""

import json

import pytest
import torch
from conftest import random_samples, tiny_dinov2, tiny_lad_seg_config, tiny_resnet, tiny_segformer, trainer_args
from huggingface_hub import HfApi, hf_hub_download
from peft import PeftModel
from transformers import Dinov2Model

from lad_hf import (
    DistillationConfig,
    DistillationTrainer,
    LabelNoiser,
    LadSegConfig,
    LadSegForSemanticSegmentation,
    LadTeacherConfig,
    LadTeacherTrainer,
    add_label_channel,
    dinov2_lora_config,
)
from lad_hf.data import build_digit_scenes, load_segmentation_dataset
from lad_hf.hub import load_segmentation_model


def hub_args(config_class, output_dir, repo_id: str, **overrides):
    return trainer_args(
        config_class,
        output_dir,
        max_steps=2,
        per_device_train_batch_size=4,
        push_to_hub=True,
        hub_model_id=repo_id,
        hub_strategy="end",
        **overrides,
    )


def test_lad_teacher_published_then_distilled_by_id(local_hub, tmp_path):
    noiser = LabelNoiser(3, alpha=0.02)
    teacher = add_label_channel(LadSegForSemanticSegmentation(tiny_lad_seg_config()), noiser)
    args = hub_args(LadTeacherConfig, tmp_path / "teacher", "user/lad-teacher")
    trainer = LadTeacherTrainer(
        model=teacher, args=args, train_dataset=random_samples(), eval_dataset=random_samples(4)
    )
    trainer.train()
    trainer.save_metrics("eval", trainer.evaluate())
    trainer.push_to_hub(dataset="user/scenes")

    files = set(HfApi().list_repo_files("user/lad-teacher"))
    assert {"config.json", "model.safetensors", "README.md"} <= files
    card = open(hf_hub_download("user/lad-teacher", "README.md")).read()
    assert "| label noise alpha (LNM, Eq. 5) | 0.02 |" in card and "| consistency weight lambda | 1 |" in card
    assert "eval_mean_iou_zero_label" in card and 'teacher_model_name_or_path="user/lad-teacher"' in card
    assert "datasets:\n- user/scenes" in card

    # Loaded by id, the teacher brings its recorded noiser and reads its label exactly as trained.
    student = LadSegForSemanticSegmentation(tiny_lad_seg_config())
    args = trainer_args(
        DistillationConfig,
        tmp_path / "student",
        max_steps=2,
        per_device_train_batch_size=4,
        teacher_model_name_or_path="user/lad-teacher",
    )
    distiller = DistillationTrainer(model=student, args=args, train_dataset=random_samples())
    assert distiller.teacher_noiser.to_dict() == noiser.to_dict()
    for loaded, trained in zip(distiller.teacher.state_dict().values(), teacher.state_dict().values(), strict=True):
        assert torch.equal(loaded, trained)
    distiller.train()
    distiller.create_model_card()
    card = (tmp_path / "student" / "README.md").read_text()
    assert "| teacher | `user/lad-teacher` |" in card and "| teacher's label noise alpha | 0.02 |" in card


def test_digit_scenes_published_then_loaded_and_streamed_by_id(local_hub, tmp_path):
    folder = build_digit_scenes(
        tmp_path / "scenes",
        num_scenes={"train": 12, "validation": 4, "test": 4},
        num_shards={"train": 2, "validation": 1, "test": 1},
    )
    HfApi().create_repo("user/digit-scenes", repo_type="dataset")
    HfApi().upload_folder(repo_id="user/digit-scenes", repo_type="dataset", folder_path=folder)

    local = load_segmentation_dataset(folder, "train")
    loaded = load_segmentation_dataset("user/digit-scenes", "train")
    streamed = list(load_segmentation_dataset("user/digit-scenes", "train", streaming=True))
    assert len(loaded) == len(streamed) == 12
    for i in range(12):
        assert (loaded[i]["label"] == local[i]["label"]).all()
    assert sorted(s["label"].sum() for s in streamed) == sorted(s["label"].sum() for s in loaded)
    assert json.loads(open(hf_hub_download("user/digit-scenes", "id2label.json", repo_type="dataset")).read())


def test_lora_adapter_published_then_loaded_on_its_base(local_hub, tmp_path):
    teacher = add_label_channel(LadSegForSemanticSegmentation(tiny_lad_seg_config()), LabelNoiser(3)).eval()
    base = LadSegForSemanticSegmentation(LadSegConfig(backbone=tiny_dinov2(), decode_head="linear", num_labels=3))
    base.save_pretrained(tmp_path / "base")
    args = hub_args(DistillationConfig, tmp_path / "student", "user/lora-student", learning_rate=0.01)
    trainer = DistillationTrainer(
        model=base,
        teacher_model=teacher,
        args=args,
        train_dataset=random_samples(),
        peft_config=dinov2_lora_config(r=2),
    )
    trainer.train()
    trainer.push_to_hub()

    files = set(HfApi().list_repo_files("user/lora-student"))
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= files
    assert "model.safetensors" not in files  # the adapter (and the head) only
    card = open(hf_hub_download("user/lora-student", "README.md")).read()
    assert "| adapters | `LORA r=2, alpha=16` |" in card and "| KD loss | `cwd` |" in card

    images = torch.randn(2, 3, 32, 32)
    student = trainer.model.eval()
    loaded = PeftModel.from_pretrained(
        LadSegForSemanticSegmentation.from_pretrained(tmp_path / "base"), "user/lora-student"
    )
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(pixel_values=images).logits, student(pixel_values=images).logits)


def test_missing_ids_say_which_id_and_which_endpoint(local_hub, tmp_path):
    with pytest.raises(ValueError) as error:
        load_segmentation_model("user/no-such-model", "the teacher")
    assert "the teacher 'user/no-such-model'" in str(error.value) and local_hub.endpoint in str(error.value)

    args = trainer_args(DistillationConfig, tmp_path, teacher_model_name_or_path="user/no-such-teacher")
    with pytest.raises(ValueError, match=f"no model 'user/no-such-teacher' on {local_hub.endpoint}"):
        DistillationTrainer(model=LadSegForSemanticSegmentation(tiny_lad_seg_config()), args=args)

    with pytest.raises(ValueError, match=f"no dataset 'user/no-such-data' on {local_hub.endpoint}"):
        load_segmentation_dataset("user/no-such-data", "train", streaming=True)


def test_dinov2_backbone_weights_load_by_id(local_hub):
    vit = Dinov2Model(tiny_dinov2())
    vit.push_to_hub("user/tiny-dinov2")
    config = LadSegConfig(
        backbone="user/tiny-dinov2", use_pretrained_backbone=True, decode_head="linear", num_labels=3
    )
    model = LadSegForSemanticSegmentation(config)
    assert torch.equal(
        model.backbone.encoder.layer[1].attention.q_proj.weight, vit.encoder.layer[1].attention.q_proj.weight
    )
    assert model.config.use_pretrained_backbone is False  # a saved copy keeps its own weights


def test_imagenet_classifiers_by_hub_id_start_students_and_teachers(local_hub):
    """The path users take with real ImageNet weights: microsoft/resnet-18 as a LadSeg backbone
    (use_pretrained_backbone) and google/mobilenet_v2_1.0_224 as a transformers segmentation model's start; both
    repos hold image classifiers, here tiny ones under the same ids."""
    from transformers import (
        MobileNetV2Config,
        MobileNetV2ForImageClassification,
        MobileNetV2ForSemanticSegmentation,
        ResNetForImageClassification,
    )

    from lad_hf.commands.arguments import ModelArguments
    from lad_hf.commands.common import build_model

    resnet = ResNetForImageClassification(tiny_resnet())
    resnet.push_to_hub("microsoft/resnet-18")
    stem = resnet.resnet.embedder.embedder.convolution.weight
    settings = dict(backbone="microsoft/resnet-18", use_pretrained_backbone=True, num_labels=3, decode_channels=8)
    student = LadSegForSemanticSegmentation(LadSegConfig(**settings))
    assert torch.equal(student.backbone.embedder.embedder.convolution.weight, stem)
    teacher = add_label_channel(LadSegForSemanticSegmentation(LadSegConfig(**settings)), LabelNoiser(3))
    assert torch.equal(teacher.backbone.embedder.embedder.convolution.weight[:, :3], stem)
    assert teacher(torch.randn(2, 4, 32, 32)).logits.shape == (2, 3, 4, 4)

    mobilenet = MobileNetV2ForImageClassification(MobileNetV2Config(depth_multiplier=0.35, num_labels=5))
    mobilenet.push_to_hub("google/mobilenet_v2_1.0_224")
    id2label = {0: "background", 1: "a", 2: "b"}
    arguments = ModelArguments(model_name_or_path="google/mobilenet_v2_1.0_224", output_stride=8)
    segmenter = build_model(arguments, id2label)
    assert isinstance(segmenter, MobileNetV2ForSemanticSegmentation) and segmenter.config.output_stride == 8
    first_conv = mobilenet.mobilenet_v2.conv_stem.first_conv.convolution.weight
    assert torch.equal(segmenter.mobilenet_v2.conv_stem.first_conv.convolution.weight, first_conv)
    assert segmenter(torch.randn(2, 3, 64, 64)).logits.shape == (2, 3, 8, 8)  # the new head, output stride 8
    teacher = add_label_channel(build_model(arguments, id2label), LabelNoiser(3))
    assert teacher(torch.randn(2, 4, 64, 64)).logits.shape == (2, 3, 8, 8)

    # A model without that option says so, before any training.
    tiny_segformer().push_to_hub("user/tiny-segformer")
    with pytest.raises(ValueError, match="has no output_stride option"):
        build_model(ModelArguments(model_name_or_path="user/tiny-segformer", output_stride=8), id2label)

"""Reliability: no silent wrong result, no lost work, errors before the work starts. One test per case of the
reliability issue (numbered as there), each asserting the exact outcome: the error and the words that matter, what
is left on disk, bit-identical weights for resumed runs."""

import io
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TinySegConfig, TinySegModel, random_samples, tiny_lad_seg_config, trainer_args
from PIL import Image as PILImage
from safetensors import SafetensorError
from safetensors.torch import load_file
from test_data import pairs, png, write_parquet

from lad_hf import (
    DistillationConfig,
    DistillationTrainer,
    LabelNoiser,
    LadSegConfig,
    LadSegForSemanticSegmentation,
    LadTeacherConfig,
    LadTeacherTrainer,
    SegmentationConfig,
    SegmentationTrainer,
    SelfDistillationConfig,
    SelfDistillationTrainer,
    add_label_channel,
    dinov2_lora_config,
)
from lad_hf.cli import main
from lad_hf.data import SegmentationTransforms, build_digit_scenes, load_segmentation_dataset
from lad_hf.hub import check_hub_ids


TESTS = Path(__file__).parent
NUM_LABELS = 11  # the digit scenes'


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Tiny digit scenes, a tiny saved LadSeg model to start from, and a recipe that trains it for 6 steps."""
    root = tmp_path_factory.mktemp("reliability")
    data = build_digit_scenes(
        root / "scenes",
        num_scenes={"train": 16, "validation": 8, "test": 4},
        num_shards={"train": 1, "validation": 1, "test": 1},
    )
    LadSegForSemanticSegmentation(tiny_lad_seg_config(num_labels=NUM_LABELS)).save_pretrained(root / "model")
    recipe = {
        "dataset_name": str(data),
        "model_name_or_path": str(root / "model"),
        "crop_size": [32, 32],
        "max_steps": 6,
        "save_steps": 2,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "learning_rate": 0.01,
        "eval_split": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "report_to": "none",
        "seed": 0,
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return root


def train_argv(workspace: Path, output_dir: Path, *more: str) -> list[str]:
    return ["--config", str(workspace / "recipe.yaml"), "--output_dir", str(output_dir), *more]


def train_in_process(argv: list[str]) -> int:
    """`lad-hf train ARGV` here, in one thread as `killed_run.py` trains (results depend on the thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(["train", *argv])
    finally:
        torch.set_num_threads(threads)


def killed_run(when: str, step: int, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TESTS / "killed_run.py"), when, str(step), *argv], capture_output=True, text=True
    )


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def uninterrupted(workspace):
    """The weights of the recipe's run, trained without a break."""
    assert train_in_process(train_argv(workspace, workspace / "uninterrupted")) == 0
    return weights(workspace / "uninterrupted")


# -- Resume and checkpoints ------------------------------------------------------------------------------------------


def test_01_a_run_killed_after_a_checkpoint_resumes_to_the_same_weights(workspace, uninterrupted, tmp_path):
    argv = train_argv(workspace, tmp_path / "run")
    killed = killed_run("after", 2, argv)
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL
    assert (tmp_path / "run" / "checkpoint-2").is_dir() and not (tmp_path / "run" / "model.safetensors").exists()
    assert train_in_process(argv) == 0  # the same command again: it resumes from checkpoint-2
    assert_same_weights(weights(tmp_path / "run"), uninterrupted)


def test_02_a_run_killed_while_writing_a_checkpoint_resumes_from_the_one_before(workspace, uninterrupted, tmp_path):
    argv = train_argv(workspace, tmp_path / "run")
    killed = killed_run("during", 4, argv)
    assert killed.returncode == -9, killed.stderr[-2000:]
    partial = tmp_path / "run" / "checkpoint-4"
    assert (partial / "optimizer.pt").stat().st_size == 64 and not (partial / "trainer_state.json").exists()
    assert train_in_process(argv) == 0  # the partial checkpoint is never taken as the latest
    assert_same_weights(weights(tmp_path / "run"), uninterrupted)


@pytest.mark.parametrize(
    "trainer_name",
    [
        "teacher",
        "distillation_fakd_cwd",
        "distillation_skd",
        "distillation_cirkd",
        "distillation_maskd",
        "self_distillation",
    ],
)
def test_01_every_trainer_resumes_bit_for_bit(workspace, tmp_path, trainer_name):
    def run(output_dir, resume=None):
        torch.manual_seed(0)
        transform = SegmentationTransforms((32, 32), seed=0)  # random augmentation, as in training
        data = load_segmentation_dataset(workspace / "scenes", "train", transform=transform)
        settings = dict(max_steps=6, save_strategy="steps", save_steps=2, per_device_train_batch_size=4, seed=0)
        student = LadSegForSemanticSegmentation(tiny_lad_seg_config("aspp", num_labels=NUM_LABELS))
        if trainer_name == "teacher":
            model = add_label_channel(student, LabelNoiser(NUM_LABELS))
            trainer = LadTeacherTrainer(
                model, trainer_args(LadTeacherConfig, output_dir, **settings), train_dataset=data
            )
        elif trainer_name == "self_distillation":
            args = trainer_args(SelfDistillationConfig, output_dir, **settings)
            trainer = SelfDistillationTrainer(model=student, args=args, train_dataset=data)
        else:
            torch.manual_seed(1)
            teacher = add_label_channel(
                LadSegForSemanticSegmentation(tiny_lad_seg_config(num_labels=NUM_LABELS)), LabelNoiser(NUM_LABELS)
            )
            kd_loss = trainer_name.removeprefix("distillation_")
            memory = dict(cirkd_pixel_memory_size=64, cirkd_region_memory_size=8, cirkd_pixel_contrast_size=16)
            args = trainer_args(
                DistillationConfig, output_dir, kd_loss=kd_loss, maskd_mask_steps=3, **memory, **settings
            )
            trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data)
        trainer.train(resume_from_checkpoint=resume)
        return {k: v.clone() for k, v in trainer.model.state_dict().items()}

    full = run(tmp_path / "full")
    resumed = run(tmp_path / "resumed", resume=str(tmp_path / "full" / "checkpoint-2"))
    assert_same_weights(resumed, full)  # experts, adapter, FAKD statistics, discriminator, memory, tokens included


def test_03_an_unwritable_output_folder_fails_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="Cannot write to the output folder .*a-file/run.*choose a writable"):
        SegmentationTrainer(
            model=TinySegModel(TinySegConfig(num_labels=3)),
            args=trainer_args(SegmentationConfig, blocker / "run", max_steps=2),
            train_dataset=random_samples(),
        )


def test_03_a_full_disk_is_said_in_words_and_the_previous_checkpoint_is_kept(tmp_path, monkeypatch):
    args = trainer_args(SegmentationConfig, tmp_path, max_steps=6, save_strategy="steps", save_steps=2)
    trainer = SegmentationTrainer(
        model=TinySegModel(TinySegConfig(num_labels=3)), args=args, train_dataset=random_samples()
    )
    torch_save = torch.save

    def full_disk(obj, path, *a, **k):  # what torch's zip writer raises when the disk fills up
        if "checkpoint-4" in str(path):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        return torch_save(obj, path, *a, **k)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(
        ValueError, match=r"checkpoint of step 4 failed: no space left on device.*checkpoint-2 is intact"
    ):
        trainer.train()
    assert (tmp_path / "checkpoint-2" / "trainer_state.json").exists()

    # The final save: safetensors' own words for a full disk.
    def no_space(*a, **k):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, message: No space left on device })")

    monkeypatch.setattr("transformers.modeling_utils.safe_save_file", no_space)
    with pytest.raises(ValueError, match=r"Saving the model to .*final failed: no space left on device.*checkpoint-2"):
        trainer.save_model(str(tmp_path / "final"))


def test_04_overwrite_output_dir_checks_everything_before_deleting(workspace, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_in_process(train_argv(workspace, run)) == 0
    before = sorted(p.name for p in run.iterdir())
    argv = train_argv(workspace, run, "--overwrite_output_dir", "--dataset_name", str(tmp_path / "mistyped"))
    assert main(["train", *argv]) == 2
    assert "Could not load the dataset" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == before  # nothing was deleted


def test_05_the_lora_base_model_is_always_the_one_asked_for(tmp_path):
    from conftest import tiny_dinov2

    teacher = add_label_channel(LadSegForSemanticSegmentation(tiny_lad_seg_config()), LabelNoiser(3))
    for hidden in (16, 24):  # model A, then model B over A's run folder
        vit = tiny_dinov2()
        vit.hidden_size, vit.intermediate_size = hidden, 2 * hidden
        student = LadSegForSemanticSegmentation(LadSegConfig(backbone=vit, decode_head="linear", num_labels=3))
        args = trainer_args(DistillationConfig, tmp_path, max_steps=1, overwrite_output_dir=True)
        DistillationTrainer(
            model=student, teacher_model=teacher, args=args, peft_config=dinov2_lora_config(r=2)
        ).save_model()
        base = json.loads((tmp_path / "base_model" / "config.json").read_text())
        assert base["backbone_config"]["hidden_size"] == hidden


def test_06_resuming_a_folder_of_another_model_says_which_run_it_holds(workspace, tmp_path, capsys):
    run = tmp_path / "run"
    killed = killed_run("after", 2, train_argv(workspace, run))
    assert killed.returncode == -9
    other = tmp_path / "other-model"
    LadSegForSemanticSegmentation(tiny_lad_seg_config("psp", num_labels=NUM_LABELS)).save_pretrained(other)
    assert main(["train", *train_argv(workspace, run, "--model_name_or_path", str(other))]) == 2
    error = capsys.readouterr().err
    assert "checkpoint-2 holds a checkpoint of another model (a lad_seg model" in error
    assert "overwrite_output_dir" in error and (run / "checkpoint-2" / "trainer_state.json").exists()


# -- Inputs that used to train to exit 0 on wrong data ---------------------------------------------------------------


def nan_rows(bad_row: int) -> list[dict]:
    samples = random_samples(16, size=16)
    for row, sample in enumerate(samples):
        sample["row"] = row
    samples[bad_row]["pixel_values"][0, 3, 3] = float("nan")
    return samples


@pytest.mark.parametrize("trainer_name", ["segmentation", "teacher", "distillation"])
def test_07_non_finite_pixels_stop_training_naming_the_step_and_rows(tmp_path, trainer_name):
    data = nan_rows(bad_row=9)  # in the third batch of 4 (no shuffling: the sampler is sequential for this test)
    settings = dict(max_steps=6, per_device_train_batch_size=4, save_strategy="steps", save_steps=1)
    model = TinySegModel(TinySegConfig(num_labels=3))
    if trainer_name == "teacher":
        model = TinySegModel(TinySegConfig(num_labels=3, num_channels=4))
        model.config.label_noiser = LabelNoiser(3).to_dict()
        trainer = LadTeacherTrainer(model, trainer_args(LadTeacherConfig, tmp_path, **settings), train_dataset=data)
    elif trainer_name == "distillation":
        teacher = TinySegModel(TinySegConfig(num_labels=3))
        args = trainer_args(DistillationConfig, tmp_path, **settings)
        trainer = DistillationTrainer(model=model, teacher_model=teacher, args=args, train_dataset=data)
    else:
        trainer = SegmentationTrainer(
            model, trainer_args(SegmentationConfig, tmp_path, **settings), train_dataset=data
        )
    trainer._get_train_sampler = lambda *a: torch.utils.data.SequentialSampler(data)
    with pytest.raises(ValueError, match=r"Step 3: the pixel values of dataset rows \[9\] are not finite"):
        trainer.train()
    assert trainer.state.global_step == 2  # no update from the bad batch
    kept = load_file(tmp_path / "checkpoint-2" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in kept.values())


def test_07_a_diverging_loss_stops_training(tmp_path):
    args = trainer_args(SegmentationConfig, tmp_path, max_steps=4, learning_rate=1e30, optim="sgd")
    trainer = SegmentationTrainer(TinySegModel(TinySegConfig(num_labels=3)), args, train_dataset=random_samples())
    with pytest.raises(ValueError, match="the loss is (nan|inf).* training diverged"):
        trainer.train()


def test_08_float_label_maps_that_are_not_whole_numbers_are_refused(tmp_path):
    labels = np.random.default_rng(0).integers(0, 3, (12, 16)).astype(np.float32) / 10  # class id / 10
    buffer = io.BytesIO()
    PILImage.fromarray(labels, mode="F").save(buffer, format="TIFF")
    rows = [{"image": png(np.zeros((12, 16, 3), np.uint8)), "label": {"bytes": buffer.getvalue(), "path": None}}]
    path = write_parquet(tmp_path / "float.parquet", rows)
    with pytest.raises(ValueError, match="row 0: the label map holds floats that are not whole numbers"):
        load_segmentation_dataset(str(path), num_labels=3)[0]


def test_09_16_bit_grayscale_images_are_scaled_to_8_bits(tmp_path):
    gray = np.random.default_rng(0).integers(0, 65536, (12, 16)).astype(np.uint16)
    buffer = io.BytesIO()
    PILImage.fromarray(gray).save(buffer, format="PNG")  # a 16-bit grayscale PNG (mode I;16)
    rows = [{"image": {"bytes": buffer.getvalue(), "path": None}, "label": pairs(1)[0]["label"]}]
    image = load_segmentation_dataset(str(write_parquet(tmp_path / "i16.parquet", rows)), num_labels=3)[0]["image"]
    assert image.dtype == np.uint8 and image.shape == (12, 16, 3)
    assert np.array_equal(image[..., 0], (gray >> 8).astype(np.uint8)) and image.std() > 10  # not a white image


def test_10_a_single_class_is_refused(tmp_path):
    with pytest.raises(ValueError, match="predicts 1 class: semantic segmentation needs at least 2"):
        SegmentationTrainer(TinySegModel(TinySegConfig(num_labels=1)), trainer_args(SegmentationConfig, tmp_path))


def test_11_an_ignore_index_that_is_a_class_is_refused(tmp_path):
    model = TinySegModel(TinySegConfig(num_labels=4, id2label={0: "bg", 1: "a", 2: "b", 3: "c"}))
    with pytest.raises(ValueError, match=r"ignore_index 3 is a class of the model \('c', one of its 4\)"):
        SegmentationTrainer(model, trainer_args(SegmentationConfig, tmp_path, ignore_index=3))
    lad_seg = LadSegForSemanticSegmentation(tiny_lad_seg_config())  # its loss ignores 255
    with pytest.raises(ValueError, match="The model's loss ignores label 255 .* ignore_index is 100"):
        SegmentationTrainer(lad_seg, trainer_args(SegmentationConfig, tmp_path, ignore_index=100))


def test_12_a_crop_smaller_than_the_output_stride_is_refused(workspace, tmp_path, capsys):
    argv = train_argv(workspace, tmp_path / "run", "--crop_size", "1", "1")
    assert main(["train", *argv]) == 2
    error = capsys.readouterr().err
    assert "images are (1, 1), smaller than the model's output stride 8" in error
    assert not (tmp_path / "run" / "checkpoint-2").exists()


# -- Errors that used to come too late or say too little -------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "eval"])
def test_13_the_preflight_stops_bad_labels_before_any_step(tmp_path, split):
    good = write_parquet(tmp_path / "good.parquet", pairs(8, num_labels=3))
    bad = write_parquet(tmp_path / "bad.parquet", pairs(8, num_labels=9))  # labels beyond the model's 3 classes
    transform = SegmentationTransforms((8, 8), seed=0)
    train = load_segmentation_dataset(str(bad if split == "train" else good), num_labels=3, transform=transform)
    evaluation = load_segmentation_dataset(str(bad if split == "eval" else good), num_labels=3, transform=transform)
    args = trainer_args(SegmentationConfig, tmp_path / "run", max_steps=4, eval_strategy="steps", eval_steps=4)
    trainer = SegmentationTrainer(
        TinySegModel(TinySegConfig(num_labels=3)), args, train_dataset=train, eval_dataset=evaluation
    )
    with pytest.raises(ValueError, match=r"row 0: .*outside the expected range \[0, 3\)"):
        trainer.train()
    assert trainer.state.global_step == 0  # stopped before the first step, not at the evaluation after the run


def test_14_per_sample_errors_name_the_dataset_row(tmp_path):
    rows = pairs(6, num_labels=3)
    rows[5] = pairs(1, num_labels=9, seed=3)[0]
    dataset = load_segmentation_dataset(str(write_parquet(tmp_path / "rows.parquet", rows)), num_labels=3)
    with pytest.raises(ValueError, match=r"^row 5: "):
        dataset[4:6]
    with pytest.raises(ValueError, match=r"^row 5: "):
        dataset.select([5, 0])[0]  # a subset keeps the rows' own numbers


def test_15_the_default_collator_says_what_is_wrong(tmp_path):
    samples = random_samples(4, size=16)
    samples[1] = {**samples[1], "pixel_values": torch.zeros(3, 12, 16), "labels": torch.zeros(12, 16).long()}
    trainer = SegmentationTrainer(
        TinySegModel(TinySegConfig(num_labels=3)), trainer_args(SegmentationConfig, tmp_path), train_dataset=samples
    )
    with pytest.raises(ValueError, match=r"Samples of one batch have different sizes .*crop or resize"):
        trainer.train()


def test_16_a_corrupt_image_in_a_stream_is_named_once(tmp_path, caplog):
    rows = pairs(4)
    rows[2] = {"image": {"bytes": b"not an image", "path": None}, "label": rows[2]["label"]}
    stream = load_segmentation_dataset(str(write_parquet(tmp_path / "c.parquet", rows)), num_labels=3, streaming=True)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):  # three epochs
            assert len(list(stream)) == 3
    warnings = [r.getMessage() for r in caplog.records if "Skipped" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("Skipped row 2, which cannot be decoded")
    assert "BytesIO" not in warnings[0]


def test_17_a_teacher_without_its_noiser_or_with_another_class_count_is_named(tmp_path):
    student, args = TinySegModel(TinySegConfig(num_labels=3)), trainer_args(DistillationConfig, tmp_path)
    four_channels = TinySegModel(TinySegConfig(num_labels=3, num_channels=4))
    with pytest.raises(ValueError, match=r"has 4 input channels.*records no label noiser.*config.label_noiser"):
        DistillationTrainer(model=student, teacher_model=four_channels, args=args)
    four_channels.config.label_noiser = LabelNoiser(5).to_dict()
    four_channels.config.name_or_path = "runs/my-teacher"
    with pytest.raises(ValueError, match="The teacher runs/my-teacher records a label noiser for 5 classes"):
        DistillationTrainer(model=student, teacher_model=four_channels, args=args)


def test_18_hub_ids_are_looked_up_once_and_fail_fast(workspace, tmp_path, capsys, monkeypatch, local_hub):
    with pytest.raises(
        ValueError, match=rf"Could not load the model 'user/no-such-model': .* on {local_hub.endpoint}"
    ):
        check_hub_ids(("the model", "user/no-such-model", "model"))
    # An endpoint that cannot be reached: one attempt, then the way out, before any data is loaded.
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    argv = train_argv(workspace, tmp_path / "run", "--model_name_or_path", "microsoft/resnet-18")
    assert main(["train", *argv]) == 2
    error = capsys.readouterr().err
    assert time.perf_counter() - start < 10
    assert "Could not reach http://127.0.0.1:9 to find the model 'microsoft/resnet-18'" in error
    assert "HF_HUB_OFFLINE=1" in error and not (tmp_path / "run").exists()


def test_19_a_split_without_data_is_named(tmp_path):
    path = write_parquet(tmp_path / "train.parquet", pairs(2))
    folder = tmp_path / "dataset" / "data"
    folder.mkdir(parents=True)
    os.replace(path, folder / "train-00000-of-00001.parquet")
    with pytest.raises(ValueError, match=r"The dataset '.*dataset' has no data in split 'validation'"):
        load_segmentation_dataset(str(tmp_path / "dataset"), "validation", num_labels=3)


# -- Gradient accumulation -------------------------------------------------------------------------------------------


def uneven_samples() -> list[dict]:
    """8 samples whose labelled pixel counts differ a lot, so that a per-micro-batch mean would weight them wrongly."""
    samples = random_samples(8, size=16)
    for i, sample in enumerate(samples):
        sample["labels"][: 2 * i] = 255
    return samples


def bn_free_lad_seg() -> LadSegForSemanticSegmentation:
    """A LadSeg model without batch statistics (they make any split of a batch differ) and without dropout."""
    model = LadSegForSemanticSegmentation(tiny_lad_seg_config("fcn", dropout=0.0))
    for name, module in list(model.named_modules()):
        if isinstance(module, torch.nn.BatchNorm2d):
            parent, _, attribute = name.rpartition(".")
            setattr(model.get_submodule(parent), attribute, torch.nn.Identity())
    return model


@pytest.mark.parametrize("trainer_name", ["segmentation", "teacher", "distillation", "self_distillation"])
def test_20_gradient_accumulation_equals_one_bigger_batch_with_uneven_ignore_pixels(tmp_path, trainer_name):
    def one_step(batch_size: int, accumulation: int, output_dir: Path):
        torch.manual_seed(0)
        settings = dict(
            max_steps=1,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            optim="sgd",
            learning_rate=0.5,
            logging_steps=1,
        )
        data = uneven_samples()
        if trainer_name == "segmentation":
            model = TinySegModel(TinySegConfig(num_labels=3))
            trainer = SegmentationTrainer(
                model, trainer_args(SegmentationConfig, output_dir, **settings), train_dataset=data
            )
        elif trainer_name == "teacher":
            model = TinySegModel(TinySegConfig(num_labels=3, num_channels=4))
            model.config.label_noiser = LabelNoiser(3, alpha=0.0, class_noise=False).to_dict()
            trainer = LadTeacherTrainer(
                model, trainer_args(LadTeacherConfig, output_dir, **settings), train_dataset=data
            )
        elif trainer_name == "distillation":
            model, teacher = TinySegModel(TinySegConfig(num_labels=3)), TinySegModel(TinySegConfig(num_labels=3))
            args = trainer_args(DistillationConfig, output_dir, **settings)
            trainer = DistillationTrainer(model=model, teacher_model=teacher, args=args, train_dataset=data)
        else:
            model = bn_free_lad_seg()
            args = trainer_args(SelfDistillationConfig, output_dir, **settings)
            trainer = SelfDistillationTrainer(model=model, args=args, train_dataset=data)
        trainer._get_train_sampler = lambda *a: torch.utils.data.SequentialSampler(data)
        trainer.train()
        loss = next(entry["loss"] for entry in trainer.state.log_history if "loss" in entry)
        return loss, torch.cat([p.detach().flatten() for p in trainer.model.parameters()])

    loss_big, weights_big = one_step(8, 1, tmp_path / "big")
    loss_accumulated, weights_accumulated = one_step(2, 4, tmp_path / "accumulated")
    assert loss_accumulated == pytest.approx(loss_big, rel=1e-5)
    torch.testing.assert_close(weights_accumulated, weights_big, rtol=1e-5, atol=1e-6)

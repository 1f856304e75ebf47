"""Smoke tests of the lad-hf training, evaluation and prediction commands on tiny budgets, and their errors."""

import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_dinov2, tiny_lad_seg_config, tiny_segformer
from huggingface_hub import HfApi, hf_hub_download
from peft import PeftModel
from PIL import Image
from test_metrics import free_port
from transformers import AutoModelForSemanticSegmentation

from lad_hf import LadSegConfig, LadSegForSemanticSegmentation
from lad_hf.benchmark.digit_scenes import DIGIT_SCENES_ID2LABEL, build_digit_scenes
from lad_hf.cli import main
from lad_hf.data import load_segmentation_dataset


NUM_LABELS = len(DIGIT_SCENES_ID2LABEL)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Tiny digit scenes, a tiny saved LadSeg model and a tiny saved Segformer to start from, and a recipe."""
    root = tmp_path_factory.mktemp("commands")
    data = build_digit_scenes(
        root / "scenes",
        num_scenes={"train": 16, "validation": 8, "test": 4},
        num_shards={"train": 1, "validation": 1, "test": 1},
    )
    LadSegForSemanticSegmentation(tiny_lad_seg_config(num_labels=NUM_LABELS)).save_pretrained(root / "tiny_lad_seg")
    tiny_segformer().save_pretrained(root / "tiny_segformer")
    recipe = {
        "dataset_name": str(data),
        "model_name_or_path": str(root / "tiny_lad_seg"),
        "crop_size": [32, 32],
        "max_steps": 2,
        "save_steps": 1,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "learning_rate": 0.001,
        "lr_scheduler_type": "polynomial",
        "lr_scheduler_kwargs": {"power": 0.9},
        "use_cpu": True,
        "disable_tqdm": True,
        "report_to": "none",
    }
    (root / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    return root


def run(workspace: Path, *argv: str) -> None:
    assert main([argv[0], "--config", str(workspace / "tiny.yaml"), *argv[1:]]) == 0


def card_and_results(run_dir: Path, evaluated: bool = True, weights: str = "model.safetensors") -> tuple[str, dict]:
    for name in ("train_results.json", "trainer_state.json", weights, "checkpoint-2"):
        assert (run_dir / name).exists(), name
    assert (run_dir / "eval_results.json").exists() == evaluated
    return (run_dir / "README.md").read_text(), json.loads((run_dir / "all_results.json").read_text())


def test_train_teacher_distill_evaluate_predict(workspace):
    # A LAD teacher, widened from a saved model: its card records the label noiser, its eval the label reliance.
    run(workspace, "train-teacher", "--output_dir", str(workspace / "teacher"), "--label_noise_alpha", "0.02")
    card, results = card_and_results(workspace / "teacher")
    assert "| label noise alpha (LNM, Eq. 5) | 0.02 |" in card and "eval_mean_iou_zero_label" in card
    assert 0.0 <= results["eval_mean_iou_shuffled_label"] <= 1.0
    teacher = AutoModelForSemanticSegmentation.from_pretrained(workspace / "teacher")
    assert teacher.config.label_noiser["alpha"] == 0.02 and teacher.config.num_channels == 4

    # A transformers model (Segformer) distilled from it: a new head for the dataset's classes.
    student_dir = workspace / "student"
    run(
        workspace,
        "distill",
        "--model_name_or_path",
        str(workspace / "tiny_segformer"),
        "--teacher_model_name_or_path",
        str(workspace / "teacher"),
        "--output_dir",
        str(student_dir),
    )
    card, results = card_and_results(student_dir)
    assert f"| teacher | `{workspace / 'teacher'}` |" in card and "| KD weight beta | 3 |" in card
    assert "LAD teacher (label channel)" in card and "eval_mean_iou" in results and "train_loss" in results
    student = AutoModelForSemanticSegmentation.from_pretrained(student_dir)
    assert student.config.model_type == "segformer" and student.config.num_labels == NUM_LABELS

    # Evaluation: plain, then with flip + scales, then sliding windows over full-size images.
    plain = workspace / "eval_plain"
    run(workspace, "evaluate", "--model_name_or_path", str(student_dir), "--output_dir", str(plain))
    metrics = json.loads((plain / "eval_results.json").read_text())
    assert metrics["eval_mean_iou"] == pytest.approx(results["eval_mean_iou"])  # the same model, the same split
    augmented = workspace / "eval_augmented"
    run(
        workspace,
        "evaluate",
        "--model_name_or_path",
        str(student_dir),
        "--output_dir",
        str(augmented),
        "--eval_split",
        "test",
        "--eval_mode",
        "original",
        "--per_device_eval_batch_size",
        "1",
        "--flip",
        "--scales",
        "0.75",
        "1.0",
        "--sliding_window",
        "--window_size",
        "48",
        "48",
    )
    metrics = json.loads((augmented / "eval_results.json").read_text())
    assert metrics["eval_flip"] and metrics["eval_scales"] == [0.75, 1.0] and 0.0 <= metrics["eval_mean_iou"] <= 1.0

    # The teacher evaluated alone uses its recorded noiser and reports its label reliance.
    run(workspace, "evaluate", "--model_name_or_path", str(workspace / "teacher"), "--output_dir", str(plain))
    assert "eval_mean_iou_zero_label" in json.loads((plain / "eval_results.json").read_text())

    # Prediction: a palette PNG of class ids and an overlay per image, at the image's size.
    images = workspace / "images"
    images.mkdir()
    test = load_segmentation_dataset(workspace / "scenes", "test")
    for i in range(2):
        Image.fromarray(test[i]["image"]).save(images / f"scene{i}.png")
    out = workspace / "predictions"
    assert (
        main(["predict", "--model_name_or_path", str(student_dir), "--inputs", str(images), "--output_dir", str(out)])
        == 0
    )
    class_map = Image.open(out / "scene0.png")
    assert class_map.mode == "P" and class_map.size == (64, 64)
    assert np.array(class_map).max() < NUM_LABELS
    assert Image.open(out / "scene1_overlay.png").size == (64, 64)


def test_train_builds_the_model_from_options_and_resumes(workspace, capsys):
    out = workspace / "baseline"
    options = ["--backbone", "resnet-18", "--decode_head", "psp", "--output_dir", str(out)]
    recipe = yaml.safe_load((workspace / "tiny.yaml").read_text())
    recipe.pop("model_name_or_path")
    (workspace / "options.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["train", "--config", str(workspace / "options.yaml"), *options, "--eval_split", "none"]) == 0
    card, results = card_and_results(out, evaluated=False)
    assert "eval_mean_iou" not in results and "eval_mean_iou" not in card and "| train_loss |" in card
    assert AutoModelForSemanticSegmentation.from_pretrained(out).config.decode_head == "psp"

    # A finished run is refused...
    assert main(["train", "--config", str(workspace / "options.yaml"), *options]) == 2
    assert "holds a finished run" in capsys.readouterr().err
    # ... an unfinished one resumes from its last checkpoint ...
    (out / "all_results.json").unlink()
    state = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["global_step"] == 1
    for checkpoint in out.glob("checkpoint-2"):
        for file in checkpoint.iterdir():
            file.unlink()
        checkpoint.rmdir()
    assert main(["train", "--config", str(workspace / "options.yaml"), *options, "--eval_split", "none"]) == 0
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    assert json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["global_step"] == 2
    # ... and --overwrite_output_dir trains over a finished one from scratch.
    assert main(["train", "--config", str(workspace / "options.yaml"), *options, "--overwrite_output_dir"]) == 0
    assert "eval_mean_iou" in json.loads((out / "all_results.json").read_text())


def test_bad_recipes_and_paths(workspace, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset_name: scenes\nlerning_rate: 0.1\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(bad)])
    assert exit_info.value.code == 2
    assert "unknown key 'lerning_rate'; did you mean 'learning_rate'?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["distill", "--config", str(workspace / "tiny.yaml"), "--kd_wieght", "2"])
    assert "unknown option '--kd_wieght'; did you mean '--kd_weight'?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--config", str(workspace / "tiny.yaml"), "--kd_loss", "cwd"])  # distill's, not train's
    assert "unknown option '--kd_loss'" in capsys.readouterr().err
    for command, option in (("train", "--lora_r"), ("distill", "--label_noise_alpha"), ("evaluate", "--lora_r")):
        with pytest.raises(SystemExit):  # each command takes its own options only
            main([command, "--config", str(workspace / "tiny.yaml"), option, "8"])
        assert f"unknown option '{option}'" in capsys.readouterr().err
    # One recipe serves several commands: evaluate leaves a distillation recipe's options alone.
    shared = tmp_path / "distill.yaml"
    shared.write_text(yaml.safe_dump({**yaml.safe_load((workspace / "tiny.yaml").read_text()), "kd_weight": 2.0}))
    missing_model = str(tmp_path / "no_such_run")
    assert main(["evaluate", "--config", str(shared), "--model_name_or_path", missing_model]) == 2
    assert f"Could not load the model '{missing_model}'" in capsys.readouterr().err

    missing = tmp_path / "no_such_folder"
    assert main(["train", "--config", str(workspace / "tiny.yaml"), "--dataset_name", str(missing)]) == 2
    assert f"Could not load the dataset '{missing}': there is no file or folder {missing}" in capsys.readouterr().err
    argv = ["distill", "--config", str(workspace / "tiny.yaml"), "--teacher_model_name_or_path", str(missing)]
    assert main([*argv, "--output_dir", str(tmp_path / "out")]) == 2
    assert f"Could not load the teacher '{missing}'" in capsys.readouterr().err
    assert main(["predict", "--model_name_or_path", str(workspace / "tiny_lad_seg"), "--inputs", str(missing)]) == 2
    assert f"No file or folder {missing}" in capsys.readouterr().err

    corrupt = tmp_path / "images"
    corrupt.mkdir()
    (corrupt / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "predictions"
    argv = ["predict", "--model_name_or_path", str(workspace / "tiny_lad_seg"), "--inputs", str(corrupt)]
    assert main([*argv, "--output_dir", str(out)]) == 2
    assert "Cannot decode" in capsys.readouterr().err and "broken.png" not in [p.name for p in out.glob("*")]


def test_teacher_with_another_label_set_is_refused_before_training(workspace, tmp_path, capsys):
    other = tmp_path / "other_teacher"
    LadSegForSemanticSegmentation(tiny_lad_seg_config(num_labels=3)).save_pretrained(other)
    argv = ["distill", "--config", str(workspace / "tiny.yaml"), "--teacher_model_name_or_path", str(other)]
    assert main([*argv, "--output_dir", str(tmp_path / "student")]) == 2
    assert "the teacher 3: distillation needs the same label set" in capsys.readouterr().err
    assert not (tmp_path / "student" / "checkpoint-1").exists()


def test_scripts_take_the_commands_options(monkeypatch, capsys):
    scripts = Path(__file__).parents[1] / "scripts"
    for name in ("train", "train_teacher", "distill", "evaluate"):
        script = scripts / f"{name}.py"
        assert f"accelerate launch --num_processes 4 scripts/{name}.py --config configs/" in script.read_text()
        monkeypatch.setattr(sys, "argv", [str(script), "--help"])
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(script), run_name="__main__")
        assert exit_info.value.code == 0 and "--output_dir" in capsys.readouterr().out


def test_distill_script_under_accelerate_launch_in_two_processes(workspace):
    """`accelerate launch scripts/distill.py`: two processes (gloo on CPU) distil together and save one run."""
    teacher = workspace / "ddp_teacher"
    run(workspace, "train-teacher", "--output_dir", str(teacher), "--eval_split", "none")
    out = workspace / "ddp_student"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--main_process_port", str(free_port())]
    script = Path(__file__).parents[1] / "scripts" / "distill.py"
    argv = ["--config", str(workspace / "tiny.yaml"), "--teacher_model_name_or_path", str(teacher)]
    result = subprocess.run([*launch, str(script), *argv, "--output_dir", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    card, results = card_and_results(out)
    assert "| processes | 2 |" in card and 0.0 <= results["eval_mean_iou"] <= 1.0
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2


def test_lora_distill_of_a_dinov2_student_saves_an_adapter_that_evaluates(workspace, local_hub):
    dinov2 = LadSegConfig(backbone=tiny_dinov2(), decode_head="linear", id2label=DIGIT_SCENES_ID2LABEL)
    LadSegForSemanticSegmentation(dinov2).save_pretrained(workspace / "tiny_dinov2")
    teacher = workspace / "lora_teacher"
    run(workspace, "train-teacher", "--output_dir", str(teacher), "--eval_split", "none")
    out = workspace / "lora_student"
    options = ["--model_name_or_path", str(workspace / "tiny_dinov2"), "--teacher_model_name_or_path", str(teacher)]
    hub = ["--push_to_hub", "--hub_model_id", "user/lora-student"]
    run(workspace, "distill", *options, "--lora_r", "2", *hub, "--output_dir", str(out))
    card, results = card_and_results(out, weights="adapter_model.safetensors")
    assert "| adapters | `LORA r=2, alpha=16` |" in card and "q_proj" in card and "decode_head" in card
    assert not (out / "model.safetensors").exists() and (out / "base_model" / "model.safetensors").exists()

    # The run folder loads on its own (base model + adapter) and evaluates to the same mIoU.
    evaluated = workspace / "lora_eval"
    run(workspace, "evaluate", "--model_name_or_path", str(out), "--output_dir", str(evaluated))
    metrics = json.loads((evaluated / "eval_results.json").read_text())
    assert metrics["eval_mean_iou"] == pytest.approx(results["eval_mean_iou"])

    # Published, the adapter goes with its base model (a subfolder) and loads on it.
    files = set(HfApi().list_repo_files("user/lora-student"))
    assert {"adapter_model.safetensors", "README.md", "base_model/model.safetensors"} <= files
    base = LadSegForSemanticSegmentation.from_pretrained("user/lora-student", subfolder="base_model")
    published = PeftModel.from_pretrained(base, "user/lora-student").eval()
    local = AutoModelForSemanticSegmentation.from_pretrained(out).eval()
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(published(pixel_values=images).logits, local(pixel_values=images).logits)


def test_commands_publish_and_load_by_hub_id(workspace, local_hub):
    HfApi().create_repo("user/scenes", repo_type="dataset")
    HfApi().upload_folder(repo_id="user/scenes", repo_type="dataset", folder_path=workspace / "scenes")
    teacher = workspace / "hub_teacher"
    hub = ["--dataset_name", "user/scenes", "--push_to_hub", "--hub_model_id", "user/cli-teacher"]
    run(workspace, "train-teacher", *hub, "--output_dir", str(teacher))
    card = open(hf_hub_download("user/cli-teacher", "README.md")).read()
    assert "datasets:\n- user/scenes" in card and "| label noise alpha (LNM, Eq. 5) | 0.01 |" in card

    student = workspace / "hub_student"
    options = ["--dataset_name", "user/scenes", "--teacher_model_name_or_path", "user/cli-teacher", "--streaming"]
    run(
        workspace,
        "distill",
        *options,
        "--push_to_hub",
        "--hub_model_id",
        "user/cli-student",
        "--output_dir",
        str(student),
    )
    card, results = card_and_results(student)
    assert "| teacher | `user/cli-teacher` |" in card and 0.0 <= results["eval_mean_iou"] <= 1.0
    assert open(hf_hub_download("user/cli-student", "README.md")).read() == card
    published = AutoModelForSemanticSegmentation.from_pretrained("user/cli-student")
    assert published.config.label_noiser is None and published.config.num_labels == NUM_LABELS


def test_self_distill_saves_the_student_alone(workspace):
    out = workspace / "sdes"
    run(workspace, "self-distill", "--num_experts", "2", "--output_dir", str(out))
    card, results = card_and_results(out)
    assert "| experts | 2 |" in card and 0.0 <= results["eval_mean_iou"] <= 1.0
    saved = AutoModelForSemanticSegmentation.from_pretrained(out)
    start = LadSegForSemanticSegmentation.from_pretrained(workspace / "tiny_lad_seg")
    assert saved.num_parameters() == start.num_parameters()


def test_images_smaller_than_the_default_crop_train_at_their_size(workspace, tmp_path):
    from lad_hf.commands.arguments import DataArguments
    from lad_hf.commands.common import load_data
    from lad_hf.trainers.segmentation_config import SegmentationConfig

    args = SegmentationConfig(output_dir=str(tmp_path / "unused"), report_to="none")
    data_args = DataArguments(dataset_name=str(workspace / "scenes"))
    train, val, _ = load_data(data_args, args)
    assert data_args.crop_size == [64, 64]  # the scenes' size, not 512x512 of padding
    assert train[0]["pixel_values"].shape == (3, 64, 64) and val[0]["pixel_values"].shape == (3, 64, 64)
    data_args = DataArguments(dataset_name=str(workspace / "scenes"), crop_size=[32, 48])
    assert load_data(data_args, args)[0][0]["pixel_values"].shape == (3, 32, 48)  # a size asked for is kept

    # The command says so, and tells the time per step once a few steps have run.
    recipe = yaml.safe_load((workspace / "tiny.yaml").read_text())
    recipe.pop("crop_size")
    recipe.update(max_steps=7, save_steps=100, eval_strategy="no")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    command = ["lad-hf", "train", "--config", str(tmp_path / "recipe.yaml"), "--output_dir", str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "are 64x64, smaller than the default crop 512x512: training at 64x64" in done.stderr
    assert "s per step here: the remaining 1 steps take about" in done.stderr

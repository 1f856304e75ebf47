import subprocess

import pytest

import lad_hf
from lad_hf.cli import main


def test_version():
    run = subprocess.run(["lad-hf", "--version"], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == f"lad-hf {lad_hf.__version__}"


def test_help():
    run = subprocess.run(["lad-hf", "--help"], capture_output=True, text=True, check=True)
    assert "Label Assisted Distillation" in run.stdout


def test_bad_input_ends_with_a_message_not_a_traceback(tmp_path):
    run = subprocess.run(
        ["lad-hf", "distill", "--dataset_name", str(tmp_path / "missing"), "--teacher_model_name_or_path", "x/y"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert f"lad-hf distill: error: Could not load the dataset '{tmp_path / 'missing'}'" in run.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--max_step", "5"], "unknown option '--max_step'; did you mean '--max_steps'?"),
        (["distill", "--kd_los", "cwd"], "unknown option '--kd_los'; did you mean '--kd_loss'?"),
        (["demo", "--output", "x"], "unknown option '--output'; did you mean '--output-dir'?"),
        (["study", "--seed", "1"], "unknown option '--seed'; did you mean '--seeds'?"),
        (["demo", "extra"], "unexpected argument 'extra'"),
    ],
)
def test_abbreviated_or_unknown_options_are_refused_with_the_closest_one(argv, message, capsys):
    # argparse would read `--max_step 5` as `--max_steps 5`: an abbreviation is refused like a typo.
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    "command, own, others",
    [
        ("train-teacher", ["--label_noise_alpha", "--consistency_weight", "--max_steps"], ["--lora_r", "--kd_loss"]),
        ("distill", ["--kd_loss", "--lora_r", "--cirkd_max_anchors"], ["--label_noise_alpha", "--sdes_temperature"]),
        ("train", ["--max_steps", "--crop_size"], ["--kd_loss", "--lora_r", "--label_noise_alpha"]),
        ("predict", ["--inputs", "--overlay_alpha"], ["--max_steps", "--kd_loss"]),
    ],
)
def test_each_command_lists_only_its_own_options(command, own, others, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(option in text for option in own), [o for o in own if o not in text]
    assert not [option for option in others if option in text]


def test_build_digit_scenes_speaks_the_commands_language(tmp_path, capsys):
    folder = tmp_path / "scenes"
    folder.mkdir()
    (folder / "build_info.json").write_text("{}")  # built with other arguments
    with pytest.raises(SystemExit):
        main(["build-digit-scenes", str(folder)])
    error = capsys.readouterr().err
    assert "add --overwrite to replace them" in error and "overwrite=True" not in error

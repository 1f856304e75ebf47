import subprocess

import lad_hf


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

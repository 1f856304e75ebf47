"""What lad_hf 0.1 wrote and what its users imported still works: saved models load and give the same logits,
interrupted runs resume from their checkpoints (the methods' training state as 0.1 laid it out), and every public
name of every 0.1 module imports from its old path, with a FutureWarning that names the new one.

The files in `tests/data/lad_hf_0.1` were written by lad_hf 0.1.0 (`make.py` there says how).
"""

import importlib
import json
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import random_samples, tiny_lad_seg_config, trainer_args
from safetensors.torch import load_file
from transformers import AutoModelForSemanticSegmentation

import lad_hf
from lad_hf import (
    DistillationConfig,
    DistillationTrainer,
    LabelNoiser,
    LadSegForSemanticSegmentation,
    add_label_channel,
)
from lad_hf._compat import MOVED_MODULES


OLD = Path(__file__).parent / "data" / "lad_hf_0.1"
OLD_NAMES = json.loads((OLD / "names.json").read_text())
# Removed in 0.2, and said so in docs/changes.md: a KD method is a DistillationObjective class in KD_LOSSES now.
REMOVED = {"lad_hf.distillation_config": {"KDLoss"}}


@pytest.mark.parametrize("name", ["student", "lad_teacher", "ocrnet", "segformer_teacher"])
def test_a_saved_0_1_model_loads_and_gives_the_same_logits(name):
    tensors = load_file(OLD / "logits.safetensors")
    model = AutoModelForSemanticSegmentation.from_pretrained(OLD / name).eval()
    inputs = tensors.get(f"{name}.inputs", tensors["pixel_values"])
    with torch.no_grad():
        logits = model(pixel_values=inputs).logits
    torch.testing.assert_close(logits, tensors[f"{name}.logits"], rtol=1e-4, atol=1e-5)
    if name.endswith("teacher"):  # its recorded noiser comes with it
        assert LabelNoiser.from_config(model.config).num_labels == 3


@pytest.mark.parametrize("kd_loss", ["fakd_cwd", "cirkd", "maskd"])
def test_a_run_interrupted_under_0_1_resumes_with_its_methods_state(tmp_path, kd_loss, monkeypatch):
    output_dir = tmp_path / kd_loss
    shutil.copytree(OLD / "interrupted" / kd_loss, output_dir)
    saved = torch.load(output_dir / "checkpoint-2" / "lad_hf_training_state.pt", weights_only=True)
    saved = saved.get("kd_objective", saved)  # 0.1 nested the objectives' state; FAKD's was flat

    torch.manual_seed(0)
    teacher = add_label_channel(LadSegForSemanticSegmentation(tiny_lad_seg_config("psp")), LabelNoiser(3))
    student = LadSegForSemanticSegmentation(tiny_lad_seg_config("aspp"))
    settings = json.loads((OLD / "interrupted" / "settings.json").read_text())
    args = trainer_args(DistillationConfig, output_dir, kd_loss=kd_loss, **settings)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher.eval(), args=args, train_dataset=random_samples()
    )
    restored = {}
    before_training = trainer.kd_objective.before_training

    def record(trainer_):  # the state the method starts from, as the checkpoint left it
        restored.update({k: v.clone() for k, v in trainer_.kd_objective.state_dict().items()})
        before_training(trainer_)

    monkeypatch.setattr(trainer.kd_objective, "before_training", record)
    if kd_loss == "maskd":  # its tokens were trained before step 1: the first stage must not run again
        monkeypatch.setattr(trainer.kd_objective, "train_tokens", lambda t: pytest.fail("the first stage ran again"))
    trainer.train(resume_from_checkpoint=True)
    assert set(restored) == set(saved)
    for key, value in saved.items():
        assert torch.equal(restored[key], value), key
    assert trainer.state.global_step == 4
    # The resumed run ends where the uninterrupted 0.1 run ended (to float rounding, which differs between CPUs).
    uninterrupted = load_file(output_dir / "uninterrupted" / "model.safetensors")
    for key, value in student.state_dict().items():
        torch.testing.assert_close(value, uninterrupted[key], rtol=1e-3, atol=1e-5, msg=key)


def test_every_public_name_of_lad_hf_0_1_imports_from_its_old_path():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for module_name, names in OLD_NAMES.items():
            module = importlib.import_module(module_name)
            missing = [n for n in names if n not in REMOVED.get(module_name, ()) and not hasattr(module, n)]
            assert not missing, (module_name, missing)


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_an_old_module_path_warns_and_gives_the_moved_objects(old, monkeypatch):
    monkeypatch.delitem(sys.modules, old, raising=False)
    new = MOVED_MODULES[old]
    with pytest.warns(FutureWarning, match=f"{old} moved to {new[0]}"):
        module = importlib.import_module(old)
    for name in OLD_NAMES[old]:
        if name in REMOVED.get(old, set()):
            continue
        sources = [importlib.import_module(target) for target in new]
        assert getattr(module, name) is next(getattr(s, name) for s in sources if hasattr(s, name)), (old, name)


def test_the_digit_scenes_moved_out_of_lad_hf_data():
    from lad_hf.benchmark import build_digit_scenes

    with pytest.warns(FutureWarning, match="lad_hf.data.build_digit_scenes moved to lad_hf.benchmark"):
        from lad_hf.data import build_digit_scenes as old

    assert old is build_digit_scenes
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        lad_hf.data.nothing  # noqa: B018


def test_0_1_training_arguments_unpickle():
    # Trainer checkpoints hold the training arguments pickled under their 0.1 class path.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        args = torch.load(OLD / "interrupted" / "cirkd" / "checkpoint-2" / "training_args.bin", weights_only=False)
    assert isinstance(args, DistillationConfig) and args.kd_loss == "cirkd"

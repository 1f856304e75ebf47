"""The built-in benchmark: the digit scenes, their "ImageNet" (single-digit pretraining), `lad-hf demo` and
`lad-hf study`. A client of the library, as a user's experiment would be: nothing in lad_hf outside this folder and
the `lad-hf` command imports it.

- `digit_scenes.py`: the scene builder (`build_digit_scenes`, a Hub-format dataset folder);
- `pretraining.py`: backbones pretrained on single digits of the train pool;
- `settings.py`: the demo's settings and its runs; `runs.py`: training them; `report.py`: tables and figures;
- `demo.py`: `lad-hf demo`; `study.py`: `lad-hf study`.
"""

from .demo import run_demo
from .digit_scenes import DIGIT_SCENES_ID2LABEL, build_digit_scenes
from .pretraining import pretrain_digit_backbone
from .settings import DemoSettings
from .study import StudySettings, run_study


__all__ = [
    "DIGIT_SCENES_ID2LABEL",
    "DemoSettings",
    "StudySettings",
    "build_digit_scenes",
    "pretrain_digit_backbone",
    "run_demo",
    "run_study",
]

"""The module paths of lad_hf 0.1, before the package was laid out by layer: each still imports, with a
FutureWarning that names where its contents live now (`docs/changes.md` lists them). They go in lad_hf 0.3.

Nothing in lad_hf imports through these paths; the benchmark's old paths load `lad_hf.benchmark` only when a user
imports them.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings


__all__ = ["MOVED_MODULES", "install", "moved_attribute"]

# Each old module, and the modules its contents moved to (searched in order for a name).
MOVED_MODULES = {
    "lad_hf.checkpoints": ("lad_hf.utils.checkpoints",),
    "lad_hf.files": ("lad_hf.utils.files",),
    "lad_hf.labels": ("lad_hf.utils.labels",),
    "lad_hf.visualization": ("lad_hf.utils.visualization",),
    "lad_hf.configuration_lad_seg": ("lad_hf.models.lad_seg.configuration_lad_seg",),
    "lad_hf.modeling_lad_seg": ("lad_hf.models.lad_seg.modeling_lad_seg",),
    "lad_hf.configuration_stdc": ("lad_hf.models.stdc.configuration_stdc",),
    "lad_hf.modeling_stdc": ("lad_hf.models.stdc.modeling_stdc",),
    "lad_hf.configuration_hrnet": ("lad_hf.models.hrnet.configuration_hrnet",),
    "lad_hf.modeling_hrnet": ("lad_hf.models.hrnet.modeling_hrnet",),
    "lad_hf.input_stem": ("lad_hf.models.input_stem",),
    "lad_hf.noising": ("lad_hf.label_channel.noising",),
    "lad_hf.losses": ("lad_hf.models.losses", "lad_hf.distillation.losses"),
    "lad_hf.kd_methods": (
        "lad_hf.distillation.objective",
        "lad_hf.distillation.skd",
        "lad_hf.distillation.ifvd",
        "lad_hf.distillation.cirkd",
        "lad_hf.distillation.maskd",
        "lad_hf.distillation.adversarial",
        "lad_hf.distillation.features",
    ),
    "lad_hf.fakd": ("lad_hf.distillation.fakd",),
    "lad_hf.modeling_sdes": ("lad_hf.distillation.sdes",),
    "lad_hf.segmentation_config": ("lad_hf.trainers.segmentation_config",),
    "lad_hf.segmentation_trainer": ("lad_hf.trainers.segmentation_trainer", "lad_hf.utils.seeds"),
    "lad_hf.lad_teacher_config": ("lad_hf.trainers.lad_teacher_config",),
    "lad_hf.lad_teacher_trainer": ("lad_hf.trainers.lad_teacher_trainer",),
    "lad_hf.distillation_config": ("lad_hf.trainers.distillation_config", "lad_hf.distillation"),
    "lad_hf.distillation_trainer": ("lad_hf.trainers.distillation_trainer",),
    "lad_hf.self_distillation_config": ("lad_hf.trainers.self_distillation_config",),
    "lad_hf.self_distillation_trainer": ("lad_hf.trainers.self_distillation_trainer", "lad_hf.distillation.sdes"),
    "lad_hf.data.digit_scenes": ("lad_hf.benchmark.digit_scenes",),
    "lad_hf.pretraining": ("lad_hf.benchmark.pretraining",),
    "lad_hf.demo": (
        "lad_hf.benchmark.demo",
        "lad_hf.benchmark.settings",
        "lad_hf.benchmark.runs",
        "lad_hf.benchmark.report",
    ),
    "lad_hf.study": ("lad_hf.benchmark.study",),
}
# Names of a package that moved out of it.
MOVED_NAMES = {
    "lad_hf.data": {
        "build_digit_scenes": "lad_hf.benchmark.digit_scenes",
        "DIGIT_SCENES_ID2LABEL": "lad_hf.benchmark.digit_scenes",
    },
}
REMOVED_IN = "lad_hf 0.3"


def _warn(old: str, new: str) -> None:
    warnings.warn(
        f"{old} moved to {new} in lad_hf 0.2; the old path goes in {REMOVED_IN}. Import it from there.",
        FutureWarning,
        stacklevel=3,
    )


class _MovedModule(types.ModuleType):
    """An old module whose contents moved to several: a name is looked up in each, in order."""

    def __init__(self, name: str, targets: tuple[str, ...]):
        super().__init__(name)
        self.__targets = [importlib.import_module(target) for target in targets]
        self.__all__ = sorted({n for module in self.__targets for n in getattr(module, "__all__", ())})

    def __getattr__(self, name: str):
        for module in self.__targets:
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __dir__(self):
        return self.__all__


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old module paths: importing one gives the module it moved to (or a `_MovedModule` over several)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        targets = MOVED_MODULES[spec.name]
        _warn(spec.name, ", ".join(targets))
        if len(targets) == 1:
            return importlib.import_module(targets[0])
        return _MovedModule(spec.name, targets)

    def exec_module(self, module):
        pass


def install() -> None:
    """Let the old module paths import (once; after every real finder, so that no real module is shadowed)."""
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModules())


def moved_attribute(package: str, name: str):
    """A package's `__getattr__` for the names that moved out of it."""
    target = MOVED_NAMES.get(package, {}).get(name)
    if target is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    _warn(f"{package}.{name}", f"{target}.{name}")
    return getattr(importlib.import_module(target), name)

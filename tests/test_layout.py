"""The package's layout is its architecture: layers that import only downwards (no cycle between its folders), a
benchmark that the library never imports, and a distillation trainer that asks each method what it needs instead
of testing its name."""

import ast
import subprocess
import sys
from pathlib import Path

import lad_hf
from lad_hf.distillation import KD_LOSSES


PACKAGE = Path(lad_hf.__file__).parent
# Clients of the library: the benchmark, the command that runs it, and the old module paths that lead to it.
CLIENTS = ("benchmark", "cli.py", "_compat.py")
LAYERS = (
    ("utils",),
    ("models", "data", "hub", "model_card", "metrics", "inference", "lora"),
    ("label_channel",),
    ("distillation",),
    ("trainers",),
    ("commands", "benchmark"),
    ("cli",),
)


def imports(path: Path) -> set[str]:
    """The lad_hf modules a file imports (anywhere in it), as dotted names."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    package = package.removesuffix(".__init__")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found |= {target} | {f"{target}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name == "lad_hf" or name.startswith("lad_hf.")}


def part(name: str) -> str:
    """The folder (or top-level module) of the package a dotted name lies in."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "lad_hf"


def library_files():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if not str(relative).startswith(CLIENTS):
            yield path


def test_the_library_never_imports_the_benchmark():
    offenders = {str(p): sorted(i for i in imports(p) if part(i) == "benchmark") for p in library_files()}
    assert not {p: i for p, i in offenders.items() if i}


def test_importing_the_library_and_its_commands_loads_no_benchmark_module():
    code = (
        "import sys, lad_hf, lad_hf.commands.distill, lad_hf.commands.evaluate, lad_hf.commands.predict, "
        "lad_hf.commands.self_distill, lad_hf.commands.train_teacher\n"
        "print(sorted(m for m in sys.modules if m.startswith('lad_hf.benchmark')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_folders_import_each_other_without_a_cycle():
    edges = {}
    for path in PACKAGE.rglob("*.py"):
        source = part(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        if source in ("lad_hf", "__init__", "_compat"):  # the package's front door and the old paths
            continue
        for target in imports(path):
            folder = part(target)
            is_module = (PACKAGE / folder).is_dir() or (PACKAGE / f"{folder}.py").is_file()
            if is_module and folder not in (source, "_compat"):
                edges.setdefault(source, set()).add(part(target))
    # Depth-first search for a cycle.
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            assert state.get(nxt) != "open", f"import cycle: {' -> '.join([*trail, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    # And every import goes down the layers (or stays in one), bottom up as the README's layout names them.
    layer = {name: level for level, names in enumerate(LAYERS) for name in names}
    upwards = {(a, b) for a, targets in edges.items() for b in targets if layer[b] > layer[a]}
    assert not upwards, upwards


def test_no_trainer_tests_a_distillation_methods_name():
    method_names = set(KD_LOSSES)
    classes = {method.__name__ for method in KD_LOSSES.values()}
    for path in (PACKAGE / "trainers").glob("*_trainer.py"):
        tree = ast.parse(path.read_text())
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
            n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
        }
        assert not strings & method_names, (path.name, strings & method_names)
        assert not names & classes, (path.name, names & classes)

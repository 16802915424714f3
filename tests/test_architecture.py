"""The dependency rule of the package: imports (those inside functions too) only point down the layers,
and nothing imports in a circle; the command line answers help and config errors without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

PACKAGE = REPO / "src" / "antimask"

# From the bottom up; a module may import from its own layer or the layers below it.
LAYERS = [
    ("base", ("antimask", "antimask.config", "antimask.errors", "antimask.files", "antimask.parallel",
              "antimask.runs")),
    ("faces", ("antimask.faces",)),
    ("data", ("antimask.data",)),
    ("backbones", ("antimask.backbones",)),
    ("models", ("antimask.models",)),
    ("steps", ("antimask.training", "antimask.tracking", "antimask.guards", "antimask.segmentation",
               "antimask.evaluation", "antimask.inference")),
    ("top", ("antimask.pipeline", "antimask.ablations", "antimask.sweeps", "antimask.cli", "antimask.__main__")),
]
# Rooms of one layer that must not import each other: evaluation and inference read runs, never training.
APART = {"antimask.training": "training", "antimask.tracking": "training", "antimask.guards": "training",
         "antimask.segmentation": "training", "antimask.evaluation": "evaluation", "antimask.inference": "inference"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every antimask module ``name`` imports, wherever the import statement sits."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name.split(".")[0] == "antimask")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "antimask":
                continue
            for alias in node.names:  # `from antimask.faces import align` imports the module antimask.faces.align
                full = f"{target}.{alias.name}"
                out.add(full if full in modules else target)
    return {t for t in out if t != name}


def _layer(name: str) -> int:
    best, index = "", None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > len(best):
                best, index = prefix, i
    if index is None:
        raise AssertionError(f"module {name} is in no layer of tests/test_architecture.py: give it one")
    return index


def _room(name: str) -> str | None:
    return next((room for prefix, room in APART.items() if name == prefix or name.startswith(prefix + ".")), None)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_the_checker_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from antimask.training import train_stage\n")
    assert _imports("antimask.faces.mod", source, {"antimask.training": source}) == {"antimask.training"}


def test_every_import_points_down_the_layers(graph):
    upward = [f"{name} ({LAYERS[_layer(name)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
              for name, targets in graph.items() for target in targets if _layer(target) > _layer(name)]
    assert not upward, "imports that point up:\n" + "\n".join(sorted(upward))


def test_evaluation_and_inference_never_import_training(graph):
    crossing = [f"{name} imports {target}" for name, targets in graph.items() for target in targets
                if _room(name) and _room(target) and _room(name) != _room(target)]
    assert not crossing, "\n".join(sorted(crossing))


def test_no_import_circles(graph):
    # A package's __init__ importing its own modules is how a package exposes them, not a circle.
    edges = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in graph.items()}
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                circles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


@pytest.mark.parametrize("argv", [["--help"], ["train-all", "model.landmark_weigth=3"], ["evaluate", "/no/such/run"]])
def test_help_config_errors_and_missing_runs_answer_without_importing_torch(argv):
    code = ("import sys\nfrom antimask.cli import main\n"
            "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as stop:\n    rc = stop.code\n"
            "print('torch' in sys.modules, 'pytorch_lightning' in sys.modules, rc)")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    heavy_torch, heavy_lightning, rc = proc.stdout.strip().splitlines()[-1].split()
    assert (heavy_torch, heavy_lightning) == ("False", "False"), proc.stdout + proc.stderr
    assert rc == ("0" if argv == ["--help"] else "2"), proc.stderr

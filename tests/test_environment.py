"""The conda environment for clusters names the same packages, at the same versions, as pyproject."""

import tomllib

import yaml

from helpers import REPO


def _pip_section() -> list[str]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return [p for p in pip if not p.startswith("-e")]


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert sorted(_pip_section()) == sorted(project["dependencies"])


def test_environment_yml_pins_python_311():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]

"""Project set-up: one source of dependencies, an installed command with helpful --help."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_installs_this_package_with_its_extras():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict))
    assert pip_section == ["-e .[dev]"]  # everything else comes from pyproject.toml
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "unetlib"
    assert "dev" in pyproject["project"]["optional-dependencies"]


def test_console_script_is_declared_and_runs():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["unetlib"] == "unetlib.cli:main"
    result = subprocess.run([sys.executable, "-m", "unetlib", "--help"], capture_output=True, text=True, check=True)
    assert "phantom" in result.stdout and "check-data" in result.stdout
    assert "UNETLIB_DATA" in result.stdout


def test_each_command_explains_itself():
    for command, phrase in (("phantom", "same seed writes the same bytes"), ("check-data", "Exit status 0")):
        result = subprocess.run([sys.executable, "-m", "unetlib", command, "--help"], capture_output=True, text=True, check=True)
        assert phrase in " ".join(result.stdout.split())


@pytest.mark.parametrize("first, warned", [("keras", True), ("unetlib", False)])
def test_importing_tensorflow_before_unetlib_is_warned_about(first, warned):
    second = "unetlib" if first == "keras" else "keras"
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    code = f"import {first}, {second}, os; print('oneDNN', os.environ['TF_ENABLE_ONEDNN_OPTS'])"
    done = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ("imported before unetlib" in done.stderr) == warned
    assert "oneDNN 1" in done.stdout


def test_every_module_lists_its_public_names_and_documents_them():
    import importlib
    import inspect

    for path in sorted((ROOT / "unetlib").glob("*.py")):
        if path.stem.startswith("_"):
            continue
        module = importlib.import_module(f"unetlib.{path.stem}")
        assert hasattr(module, "__all__"), f"{path.name}: no __all__"
        for name in module.__all__:
            value = getattr(module, name)  # every listed name exists
            if inspect.isfunction(value) or inspect.isclass(value):
                assert inspect.getdoc(value), f"{path.name}: {name} has no docstring"

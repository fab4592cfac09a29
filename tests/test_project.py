"""Project set-up: one source of dependencies, an installed command with helpful --help."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
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
        result = subprocess.run(
            [sys.executable, "-m", "unetlib", command, "--help"], capture_output=True, text=True, check=True
        )
        assert phrase in " ".join(result.stdout.split())


@pytest.mark.parametrize("first, warned", [("keras", True), ("unetlib", False)])
def test_importing_tensorflow_before_unetlib_is_warned_about(first, warned):
    second = "unetlib" if first == "keras" else "keras"
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    code = f"import {first}, {second}, os; print('oneDNN', os.environ['TF_ENABLE_ONEDNN_OPTS'])"
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert ("imported before unetlib" in done.stderr) == warned
    assert "oneDNN 1" in done.stdout


def _public_modules():
    """Every module of the package whose public names are listed: ``unetlib.X`` and ``unetlib.phantom``."""
    names = [
        f"unetlib.{path.stem}" for path in sorted((ROOT / "unetlib").glob("*.py")) if not path.stem.startswith("_")
    ]
    return [importlib.import_module(name) for name in names + ["unetlib.phantom"]]


def _parameters(callable_) -> list[str]:
    """The parameters a caller passes by name: no self/cls, no *args/**kwargs."""
    return [
        parameter.name
        for parameter in inspect.signature(callable_).parameters.values()
        if parameter.name not in ("self", "cls")
        and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]


def _section_names(doc: str, header: str) -> set[str] | None:
    """The names a Google-style section (``Args:``, ``Attributes:``) lists, one ``name: text`` or
    ``name (type): text`` entry each; None when the docstring has no such section."""
    lines = doc.splitlines()
    for number, line in enumerate(lines):
        if line.strip() != f"{header}:":
            continue
        indent, entry_indent, names = len(line) - len(line.lstrip()), None, set()
        for entry in lines[number + 1 :]:
            if not entry.strip():
                continue
            depth = len(entry) - len(entry.lstrip())
            if depth <= indent:  # the section ended
                break
            entry_indent = entry_indent or depth
            match = re.match(r"\*{0,2}(\w+)\s*(?:\([^)]*\))?:", entry.strip())
            if depth == entry_indent and match:  # deeper lines continue an entry's text
                names.add(match.group(1))
        return names
    return None


def _undocumented_parameters(label: str, doc: str, parameters: list[str], header: str) -> list[str]:
    """One message per parameter ``doc`` does not name in its ``header`` section."""
    if not parameters:
        return []
    names = _section_names(doc or "", header)
    if names is None:
        return [f"{label}: no {header}: section for {', '.join(parameters)}"]
    return [f"{label}: {header}: section omits {name}" for name in parameters if name not in names]


def _is_record(cls) -> bool:
    """Dataclasses and named tuples: their parameters are their fields."""
    return dataclasses.is_dataclass(cls) or (issubclass(cls, tuple) and hasattr(cls, "_fields"))


def _builds_itself(cls) -> bool:
    """Whether the class's constructor is the kit's own; one inherited from Keras takes Keras' arguments,
    which Keras documents."""
    owner = next(klass for klass in cls.__mro__ if "__init__" in vars(klass) or "__new__" in vars(klass))
    return owner.__module__.startswith("unetlib")


def _parameter_documentation_problems(value) -> list[str]:
    """Where a listed function, class or public method of a listed class leaves a parameter unexplained.

    Functions and methods name each parameter in an ``Args:`` section; dataclasses and named tuples
    name each field in an ``Attributes:`` section of the class docstring; other classes name their
    constructor's parameters in an ``Args:`` section of the class or ``__init__`` docstring.
    """
    label = f"{value.__module__}.{value.__qualname__}"
    if inspect.isfunction(value):
        return _undocumented_parameters(label, inspect.getdoc(value), _parameters(value), "Args")
    problems = []
    if _is_record(value):
        problems += _undocumented_parameters(label, inspect.getdoc(value), _parameters(value), "Attributes")
    elif _builds_itself(value):
        init = vars(value).get("__init__")
        doc = "\n".join(filter(None, [inspect.getdoc(value), inspect.getdoc(init) if init else None]))
        problems += _undocumented_parameters(label, doc, _parameters(value), "Args")
    for name, member in vars(value).items():
        function = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
        if name.startswith("_") or not inspect.isfunction(function):
            continue  # private helpers, properties
        method = getattr(value, name)  # getdoc falls back on the overridden method's docstring (Keras' hooks)
        problems += _undocumented_parameters(f"{label}.{name}", inspect.getdoc(method), _parameters(method), "Args")
    return problems


def test_every_module_lists_its_public_names_and_documents_them():
    problems, seen = [], set()
    for module in _public_modules():
        assert hasattr(module, "__all__"), f"{module.__name__}: no __all__"
        for name in module.__all__:
            value = getattr(module, name)  # every listed name exists
            if inspect.isfunction(value) or inspect.isclass(value):
                assert inspect.getdoc(value), f"{module.__name__}: {name} has no docstring"
                if id(value) in seen or not value.__module__.startswith("unetlib"):
                    continue  # already checked (a re-export), or not the kit's own (numpy's float16)
                seen.add(id(value))
                problems += _parameter_documentation_problems(value)
    assert not problems, f"{len(problems)} documentation gap(s):\n" + "\n".join(problems)


@pytest.mark.parametrize("imported, not_loaded", [("unetlib.viz", "unetlib.data"), ("unetlib.data", "unetlib.phantom")])
def test_imports_follow_the_layers(imported, not_loaded):
    # Figures need slice names, not the data layer; reading data needs the generator only to generate.
    code = f"import json, sys, {imported}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert imported in loaded
    assert not [name for name in loaded if name == not_loaded or name.startswith(not_loaded + ".")], loaded

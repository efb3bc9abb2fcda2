"""The docs are the product too: every config key and CLI command is documented, and code is clean."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from relay.cli import cli
from relay.config import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def config_keys() -> list[str]:
    """Every `section.key` the settings model accepts."""
    keys = []
    for section, info in Settings.model_fields.items():
        model = info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            keys += [f"{section}.{key}" for key in model.model_fields]
    return keys


@pytest.mark.parametrize("key", config_keys())
def test_every_config_key_is_in_the_example_and_readme(key: str) -> None:
    """config.example.toml sets every key (so it parses into the same model) and the README names it."""
    example = tomllib.loads((ROOT / "config.example.toml").read_text())
    section, name = key.split(".")
    assert name in example.get(section, {}), f"{key} missing from config.example.toml"
    assert f"`{key}`" in README or re.search(rf"`{section}\.[^`]*\b{name}\b", README), f"{key} missing from README"


def test_example_config_is_valid() -> None:
    """config.example.toml parses with no unknown key."""
    from relay.config import parse_settings

    parse_settings(tomllib.loads((ROOT / "config.example.toml").read_text()), env={})


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_cli_command_is_in_the_readme_with_an_example(command: str) -> None:
    """Each command appears in the README's CLI table and its help has an Example block."""
    assert f"`relay {command}" in README
    assert "Example" in (cli.commands[command].help or "")


def test_readme_names_exactly_two_setup_commands() -> None:
    """The quickstart's two commands: one runs `relay serve`, one runs the tests; .ci/run uses the latter."""
    commands = re.findall(r"^\$ (python3 -m venv .*)$", README, flags=re.M)
    assert len(commands) == 2
    assert commands[0].endswith("relay serve")
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("tool", ["ruff", "mypy"])
def test_lint_and_types_are_clean(tool: str) -> None:
    """ruff and mypy --strict pass on the package (CI enforces the house style)."""
    exe = shutil.which(tool, path=str(Path(sys.executable).parent)) or shutil.which(tool)
    assert exe, f"{tool} is not installed"
    args = [exe, "check", "relay", "tests", "bench"] if tool == "ruff" else [exe]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr

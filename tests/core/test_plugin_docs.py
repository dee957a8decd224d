"""docs/plugins.md documents every hook the plugin system defines."""

from __future__ import annotations

import inspect
from pathlib import Path

from dicomnode.plugins import _hookspecs

PAGE = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def hookspec_names() -> list[str]:
    return [name for name, value in vars(_hookspecs).items()
            if inspect.isfunction(value) and name.startswith("dicomnode_")]


def test_there_are_seven_hooks() -> None:
    assert sorted(hookspec_names()) == sorted([
        "dicomnode_grinders", "dicomnode_virtual_elements", "dicomnode_outputs",
        "dicomnode_inputs", "dicomnode_executors", "dicomnode_services", "dicomnode_commands",
    ])


def test_every_hookspec_has_a_reference_section_with_its_signature() -> None:
    text = PAGE.read_text(encoding="utf-8")
    for name in hookspec_names():
        function = getattr(_hookspecs, name)
        returns = inspect.signature(function).return_annotation
        heading = f"### `{name}() -> {returns}`"
        assert heading in text, f"docs/plugins.md lacks the section {heading!r}"
        section = text.split(heading, 1)[1].split("\n### ", 1)[0]
        assert "@hookimpl" in section and f"def {name}():" in section, f"{name} has no example"

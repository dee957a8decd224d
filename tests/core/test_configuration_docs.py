"""docs/configuration.md documents every setting of PipelineConfig, with its real default."""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from dicomnode.server.config import SETTINGS, PipelineConfig

PAGE = Path(__file__).resolve().parent.parent.parent / "docs" / "configuration.md"
_ROW = re.compile(r"^\| `(\w+)` \| ([^|]*) \| ([^|]*) \| ([^|]*) \| ([^|]*) \|$", re.M)


def _rows() -> dict[str, tuple[str, ...]]:
    return {m.group(1): tuple(cell.strip() for cell in m.groups()[1:]) for m in _ROW.finditer(PAGE.read_text())}


def test_every_setting_has_a_row_and_every_row_is_a_setting() -> None:
    documented = _rows()
    missing = [name for name in SETTINGS if name not in documented]
    assert not missing, f"settings missing from {PAGE.name}: {missing}"
    assert [name for name in documented if name not in SETTINGS] == []


def test_every_row_says_type_allowed_values_and_meaning() -> None:
    for name, (kind, default, allowed, meaning) in _rows().items():
        assert kind and default and allowed and len(meaning) > 15, name


def test_documented_defaults_are_the_real_defaults() -> None:
    rows = _rows()
    for field in attrs.fields(PipelineConfig):
        if field.name in ("inputs", "name", "patient_identifier_tag"):
            continue  # required / derived from the class / shown as the keyword users write
        default = field.default.factory() if isinstance(field.default, attrs.Factory) else field.default  # type: ignore[arg-type]
        text = f'"{default}"' if isinstance(default, str) else "{}" if isinstance(default, dict) else repr(default)
        assert rows[field.name][1] == f"`{text}`", f"{field.name}: the page says {rows[field.name][1]}, the code {text}"
    assert rows["patient_identifier_tag"][1] == '`"PatientID"`'
    assert PipelineConfig.__attrs_attrs__.patient_identifier_tag.default == 0x00100020  # type: ignore[attr-defined]

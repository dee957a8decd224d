"""The core-version requirement check for plugins (a small part of PEP 440)."""

from __future__ import annotations

import pytest

from dicomnode.plugins._version_check import core_specifier, satisfies


@pytest.mark.parametrize(("version", "specifier", "expected"), [
    ("0.1.0", ">=0.1,<1", True),
    ("1.0.0", ">=0.1,<1", False),
    ("0.0.9", ">=0.1,<1", False),
    ("0.3", "~=0.2", True),
    ("1.0", "~=0.2", False),
    ("0.2.5", "~=0.2.1", True),
    ("0.3.0", "~=0.2.1", False),
    ("0.1.0", "==0.1.*", True),
    ("0.2.0", "==0.1.*", False),
    ("0.1.0", "!=0.1.0", False),
    ("0.1.0", "", True),
])
def test_satisfies(version: str, specifier: str, expected: bool) -> None:
    assert satisfies(version, specifier) is expected


def test_core_specifier_reads_the_requirement_on_dicomnode_only() -> None:
    requires = ["numpy>=1.24", "dicomnode>=0.1,<1", "dicomnode-numpy>=0.1", "dicomnode[extra]>=9; extra == 'x'"]
    assert core_specifier(requires) == ">=0.1,<1"
    assert core_specifier(["Dicomnode (>=0.2)"]) == ">=0.2"
    assert core_specifier(None) is None

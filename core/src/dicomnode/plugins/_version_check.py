"""Checks a plugin's requirement on the core version (``dicomnode>=0.1,<1``).

The core depends on nothing but pydicom, pynetdicom, pluggy and attrs, so this
implements the small part of PEP 440 that plugin requirements use: release
numbers compared with ``==``, ``!=``, ``>=``, ``<=``, ``>``, ``<`` and ``~=``.
"""

from __future__ import annotations

import re

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*\(?([^;)]*)\)?\s*(;.*)?$")
_CLAUSE = re.compile(r"^\s*(~=|==|!=|>=|<=|>|<)\s*([0-9][0-9.]*)(\.\*)?\s*$")


def _release(version: str) -> tuple[int, ...]:
    match = re.match(r"^\s*v?(\d+(?:\.\d+)*)", version)
    if match is None:
        return (0,)
    return tuple(int(part) for part in match.group(1).split("."))


def _pad(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)), b + (0,) * (width - len(b))


def satisfies(version: str, specifier: str) -> bool:
    """True when ``version`` satisfies every clause of ``specifier`` (e.g. ``">=0.1,<1"``)."""
    have = _release(version)
    for clause in filter(None, (part.strip() for part in specifier.split(","))):
        match = _CLAUSE.match(clause)
        if match is None:
            continue  # a clause we cannot read is not a reason to refuse a plugin
        operator, wanted_text, wildcard = match.groups()
        wanted = _release(wanted_text)
        if wildcard and operator in ("==", "!="):
            prefix_equal = have[: len(wanted)] == wanted
            if (operator == "==") != prefix_equal:
                return False
            continue
        left, right = _pad(have, wanted)
        if operator == "~=":
            upper = (*wanted[:-2], wanted[-2] + 1) if len(wanted) >= 2 else (wanted[0] + 1,)
            up_left, up_right = _pad(have, upper)
            ok = left >= right and up_left < up_right
        else:
            ok = {
                "==": left == right,
                "!=": left != right,
                ">=": left >= right,
                "<=": left <= right,
                ">": left > right,
                "<": left < right,
            }[operator]
        if not ok:
            return False
    return True


def core_specifier(requirements: list[str] | None, core_name: str = "dicomnode") -> str | None:
    """The specifier a distribution's ``Requires-Dist`` lines put on the core, or None."""
    for line in requirements or []:
        match = _REQUIREMENT.match(line)
        if match is None:
            continue
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        marker = match.group(4) or ""
        if name == core_name and "extra" not in marker:
            return match.group(3).strip()
    return None

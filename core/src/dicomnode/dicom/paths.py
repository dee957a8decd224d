"""Turning tag values into file and folder names that cannot leave their directory.

A PatientID of ``../../etc`` is data, not a path: every component goes through
:func:`safe_component`, which keeps readable characters, replaces the rest,
refuses names Windows reserves, bounds the length and adds a short hash of the
original value whenever it had to change it (so two different values never
collide into one folder).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

__all__ = ["contained_path", "safe_component"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
MAX_COMPONENT = 64


def safe_component(value: object, *, fallback: str = "unknown", max_length: int = MAX_COMPONENT) -> str:
    """A file-name component made from ``value`` that is safe on every file system.

    >>> safe_component("1.2.840.113619.2.55")
    '1.2.840.113619.2.55'
    >>> safe_component("../../etc").startswith("etc-")
    True
    """
    original = "" if value is None else str(value)
    text = unicodedata.normalize("NFKD", original).encode("ascii", "ignore").decode("ascii")
    text = _UNSAFE.sub("_", text).strip("._-")
    if not text:
        text = fallback
    if text.split(".")[0].upper() in _RESERVED:
        text = f"_{text}"
    # a value cut to length also gets the hash, so the hash must fit in max_length too
    changed = text != original or len(text) > max_length
    budget = max_length - 9 if changed else max_length
    if len(text) > budget:
        text = text[:budget].rstrip("._-") or fallback
    if changed:
        digest = hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        text = f"{text}-{digest}"
    return text


def contained_path(root: Path, *components: object) -> Path:
    """``root / c1 / c2 …`` with each component made safe, checked to stay inside ``root``."""
    path = root.joinpath(*(safe_component(c) for c in components))
    resolved_root = root.resolve()
    if resolved_root not in path.resolve().parents and path.resolve() != resolved_root:
        raise ValueError(f"refusing a path outside {root}: {path}")
    return path

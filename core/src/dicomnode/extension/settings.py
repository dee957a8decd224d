"""Settings given as class attributes: finding them, and catching the ones that are almost a setting.

A pipeline or an input is configured by the class attributes of a subclass
(``ae_title = "SEG"``, ``required_values = {...}``). A typo there
(``ae_tile``, ``data_dir``, ``required_value``) would otherwise be an
attribute nobody reads: the node would start with the default, silently.
:func:`class_attributes` lists what a user's classes set, and
:func:`near_setting` says which setting a name is probably meant to be.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Collection, Iterator
from typing import Any

__all__ = ["class_attributes", "misspelt", "near_setting", "table_value"]

#: how alike a name and a setting must be to count as a typo (difflib's ratio)
_ALIKE = 0.8


def near_setting(name: str, settings: Collection[str]) -> str | None:
    """The setting ``name`` is probably a misspelling or a shortening of, or None.

    >>> near_setting("ae_tile", ["ae_title", "port"])
    'ae_title'
    >>> near_setting("data_dir", ["data_directory"])
    'data_directory'
    >>> near_setting("model_path", ["data_directory", "port"]) is None
    True
    """
    if name in settings:
        return None
    shortened = [setting for setting in settings if len(name) >= 4 and setting.startswith(name)]
    if shortened:
        return min(shortened, key=len)
    close = difflib.get_close_matches(name, list(settings), n=1, cutoff=_ALIKE)
    return close[0] if close else None


def _is_member(value: Any) -> bool:
    """Methods, properties and nested classes are a class's own code, never settings."""
    return (inspect.isfunction(value) or inspect.isclass(value)
            or isinstance(value, (property, classmethod, staticmethod)))


def class_attributes(cls: type, is_framework: Callable[[type], bool]) -> Iterator[tuple[type, str, Any]]:
    """(class, name, value) for every public data attribute a user's classes set, nearest class first.

    Walks ``cls`` and its bases, leaving out the classes ``is_framework``
    says belong to dicomnode or a plugin (whose attributes are the settings
    and their defaults). Names starting with ``_``, methods and properties
    are left out.
    """
    for klass in cls.__mro__:
        if is_framework(klass) or klass is object:
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or _is_member(value):
                continue
            yield klass, name, value


def misspelt(cls: type, settings: Collection[str], is_framework: Callable[[type], bool],
             what: str) -> str | None:
    """A message for the first attribute of ``cls`` that is almost one of ``settings``, or None."""
    for klass, name, _value in class_attributes(cls, is_framework):
        guess = near_setting(name, settings)
        if guess is not None:
            return (f"{klass.__name__}.{name} is not a setting of {what}; did you mean {guess!r}? "
                    "(an attribute of your own with that name can start with an underscore)")
    return None


def table_value(settings: Any, key: str, kind: type | tuple[type, ...], default: Any,
                check: Callable[[Any], bool] | None, allowed: str,
                error: Callable[[str], Exception]) -> Any:
    """One value of a plugin's settings table (``executor_settings``, a service's table), checked.

    ``default`` when ``key`` is absent; else the value when it is a ``kind``
    (a bool is not a number here) and ``check`` accepts it; else
    ``error(expected)`` is raised, ``expected`` being ``allowed`` or the
    kind's name, so that each caller words its own message.
    """
    if key not in settings:
        return default
    value = settings[key]
    ok = not (isinstance(value, bool) and kind in (int, float, (int, float))) and isinstance(value, kind)
    if ok and check is not None:
        ok = check(value)
    if not ok:
        raise error(allowed or (kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)))
    return value

"""Every example in docs/ runs.

Conventions for a page in ``docs/``:

- Every fenced block that opens with ```` ```python ```` is executed, in order,
  in one namespace per page, with the page's own temporary directory as the
  working directory. Blocks meant only to be read (a pyproject snippet, shell
  commands, a file a user would write elsewhere) use another language tag:
  ```` ```toml ````, ```` ```bash ````, ```` ```text ````, or ```` ```py ````
  for Python that must not run.
- A page whose examples need plugins says so on a line of its own:
  ``<!-- requires-plugins: numpy, dicom-output -->``. In a test session
  without those plugins the page is deselected, like any plugin test.
- A page whose examples need a real peer says so the same way:
  ``<!-- requires-peers: dcmtk -->``.
- An example that must fail shows it with ``try``/``except`` and an assert.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import require_peer

DOCS = Path(__file__).resolve().parent.parent / "docs"
_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
_REQUIRES = re.compile(r"<!--\s*requires-(plugins|peers):\s*([^>]*?)\s*-->")


def _pages() -> list[object]:
    params = []
    for page in sorted(DOCS.glob("**/*.md")):
        text = page.read_text(encoding="utf-8")
        if not _BLOCK.search(text):
            continue
        marks = []
        for kind, names in _REQUIRES.findall(text):
            if kind == "plugins":
                marks.append(pytest.mark.plugin(*[n.strip() for n in names.split(",") if n.strip()]))
        params.append(pytest.param(page, id=str(page.relative_to(DOCS)), marks=marks))
    return params


@pytest.mark.parametrize("page", _pages())
def test_every_python_example_on_the_page_runs(page: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    text = page.read_text(encoding="utf-8")
    for kind, names in _REQUIRES.findall(text):
        if kind == "peers":
            for name in (n.strip() for n in names.split(",") if n.strip()):
                require_peer(name)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    for number, match in enumerate(_BLOCK.finditer(text), start=1):
        line = text[: match.start()].count("\n") + 2
        code = compile(match.group(1), f"{page.name}:block{number}:line{line}", "exec")
        exec(code, namespace)
    assert os.getcwd() == str(tmp_path), "an example changed the working directory"

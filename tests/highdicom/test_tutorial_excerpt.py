"""The tutorial's "Send a mask back as SEG" shows code of examples/bone_seg.py, which the example tests run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_line_of_the_tutorials_excerpt_is_in_the_example() -> None:
    page = (ROOT / "docs" / "create-a-pipeline.md").read_text(encoding="utf-8")
    section = page.split("## 8. Send a mask back as SEG", 1)[1].split("\n## ", 1)[0]
    [excerpt] = re.findall(r"^```py\n(.*?)^```", section, re.S | re.M)
    example = {line.strip() for line in (ROOT / "examples" / "bone_seg.py").read_text().splitlines()}
    shown = [line.split("#")[0].strip() for line in excerpt.splitlines()]
    missing = [line for line in shown if line and line not in example and
               not any(line in candidate for candidate in example)]
    assert missing == [], f"the tutorial shows lines that examples/bone_seg.py does not have: {missing}"

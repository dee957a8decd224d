"""The plugin is cheap to discover: highdicom is imported when a factory is first used, not before."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.plugin("highdicom")

STEPS = """
import json, sys
seen = []
def note():
    seen.append("highdicom" in sys.modules)
from dicomnode.plugins import load_plugins
load_plugins(strict=True); note()
import dicomnode_highdicom; note()
from dicomnode_highdicom import MASK_BLUEPRINT; note()
from dicomnode_highdicom import SegFactory; note()
print(json.dumps(seen))
"""


def test_discovery_the_package_and_the_mask_blueprint_import_no_highdicom() -> None:
    done = subprocess.run([sys.executable, "-c", STEPS], capture_output=True, text=True, timeout=120, check=True)
    discovered, package, blueprint, factory = json.loads(done.stdout)
    assert (discovered, package, blueprint, factory) == (False, False, False, True)


def test_every_public_name_is_exported() -> None:
    import dicomnode_highdicom

    for name in dicomnode_highdicom.__all__:
        assert getattr(dicomnode_highdicom, name) is not None
    with pytest.raises(AttributeError):
        dicomnode_highdicom.NoSuchFactory  # noqa: B018

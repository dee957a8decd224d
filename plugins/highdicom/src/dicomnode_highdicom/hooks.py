"""The plugin's hook implementations: the module its entry point names. Cheap to import.

The factories of this plugin are called from a pipeline's ``process`` (they
build datasets from a mask and its sources), so there is no registered name to
contribute yet: registering the module lists the distribution, its version
and status in ``dicomnode plugins``, and makes a failed install (a missing
highdicom) a reported plugin failure instead of an ImportError in a job.
"""

from __future__ import annotations

import importlib.util

from dicomnode.errors import PluginError

# highdicom is imported on first use only; its absence is found here, at discovery
if importlib.util.find_spec("highdicom") is None:  # pragma: no cover - a broken install
    raise PluginError("dicomnode-highdicom needs highdicom, which is not installed: pip install highdicom",
                      distribution="dicomnode-highdicom")

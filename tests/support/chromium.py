"""Headless Chromium for the status page: the DOM after loading a URL, and a screenshot, in one run.

Each call starts ``/usr/bin/chromium`` with a fresh profile in a folder of
its own, without the sandbox (tests may run as root), the GPU, QUIC or any
background networking, and waits for it to end.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["render"]

_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-dev-shm-usage", "--hide-scrollbars"]


def _run(program: str, profile: Path, url: str, *flags: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    profile.mkdir(parents=True, exist_ok=True)
    return subprocess.run([program, *_FLAGS, f"--user-data-dir={profile}", *flags, url], capture_output=True,
                          text=True, timeout=timeout, check=False)


def render(program: str, profile: Path, url: str, target: Path, size: tuple[int, int] = (1200, 860)) -> str:
    """Load ``url`` once: return the page's DOM as Chromium serialises it, and write a PNG of the page,
    ``size`` pixels, to ``target``."""
    done = _run(program, profile, url, "--dump-dom", f"--screenshot={target}", f"--window-size={size[0]},{size[1]}")
    if done.returncode != 0 or not target.is_file():
        raise RuntimeError(f"chromium failed or made no screenshot ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout

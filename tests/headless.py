"""Debian's headless Chromium for the tests that render pages (the HTML audit report, the
operator's web view): found or installed, run on a page, its console read."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]
# Chromium logs page console messages (and uncaught errors) as INFO:CONSOLE lines.
CONSOLE = re.compile(r":CONSOLE[:(]")


def find_chromium() -> str:
    """The chromium binary, installed with apt-get first if it is missing and we may; fails
    the test (one line) if there is none."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"], env=env, check=False, timeout=900
        )
        found = shutil.which("chromium")
    if found is None:
        pytest.fail("Debian's chromium package is needed (apt-get install -y chromium)")
    return found


def browse(chromium: str, url: str, profile: str, *mode: str) -> subprocess.CompletedProcess:
    """Opens `url` in a headless Chromium of its own profile folder; `mode` is what to do
    (``--dump-dom``, ``--screenshot=...``, ``--window-size=...``)."""
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *mode, url],
        capture_output=True,
        timeout=120,
    )


def console_lines(stderr: bytes) -> list[str]:
    """The page's console messages and uncaught errors in Chromium's log."""
    return [line for line in stderr.decode(errors="replace").splitlines() if CONSOLE.search(line)]

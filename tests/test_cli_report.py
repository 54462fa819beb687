"""`taskledger report --html`: a self-contained audit that headless Chromium renders with
its charts and no console errors.

Needs Debian's `chromium` package; the set-up installs it (apt-get) when it is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib

import pytest
from cli_log import KILL, run, story

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


@pytest.fixture(scope="module")
def story_log(tmp_path_factory):
    return story(tmp_path_factory)


@pytest.fixture(scope="session")
def chromium() -> str:
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
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *mode, url],
        capture_output=True,
        timeout=120,
    )


def console_lines(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode(errors="replace").splitlines() if CONSOLE.search(line)]


def png_pixels(data: bytes) -> set[tuple[int, int, int]]:
    """The distinct RGB colours of an 8-bit RGB/RGBA PNG (enough to see what was painted)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, idat = 8, b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        body = data[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        at += 12 + length
    assert depth == 8 and colour in (2, 6)
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(idat)
    previous = bytearray(stride)
    colours = set()
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                line[i] = (line[i] + pred) & 0xFF
        colours.update((line[i], line[i + 1], line[i + 2]) for i in range(0, stride, channels * 4))
        previous = line
    return colours


def test_report_content(story_log, tmp_path):
    out = tmp_path / "audit.html"
    result = run("report", "--log", story_log, "--html", str(out), "--json")
    assert result.exit_code == 0, result.output
    page = out.read_text()
    # Self-contained: no script, nothing fetched from anywhere.
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page)
    assert "default-src 'none'" in page
    for section in ("runs", "drift", "commands", "converge", "tasks"):
        assert f'id="{section}"' in page
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart"') == 4
    # A section per task that drifted or was acted on, with its history and why.
    assert 'id="task-rogue-1-' in page
    assert "killed because the implicit run #1 at 03:01:40" in page
    assert f"KILL #{KILL}" in page
    assert "R-IMPLICIT-KILL-UNKNOWN" in page


def test_chromium_renders_the_charts_without_console_errors(story_log, tmp_path, chromium):
    out = tmp_path / "audit.html"
    assert run("report", "--log", story_log, "--html", str(out)).exit_code == 0
    url = out.as_uri()

    # The detector works: a page that logs an error is caught.
    control = tmp_path / "control.html"
    control.write_text("<!DOCTYPE html><script>console.error('control-error')</script>")
    seen = browse(chromium, control.as_uri(), str(tmp_path / "p0"), "--dump-dom")
    assert any("control-error" in line for line in console_lines(seen.stderr))

    dom = browse(chromium, url, str(tmp_path / "p1"), "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_lines(dom.stderr) == []
    rendered = dom.stdout.decode()
    assert rendered.count("<svg") == 4 and 'class="bar"' in rendered
    assert 'class="series"' in rendered

    shot = tmp_path / "shot.png"
    painted = browse(
        chromium, url, str(tmp_path / "p2"), f"--screenshot={shot}", "--window-size=1000,2200"
    )
    assert painted.returncode == 0 and shot.exists(), painted.stderr[-2000:]
    assert console_lines(painted.stderr) == []
    colours = png_pixels(shot.read_bytes())
    # The charts' colours were painted: runs/commands (blue, green), drift lines (orange).
    for rgb in ((0x00, 0x72, 0xB2), (0x00, 0x9E, 0x73), (0xE6, 0x9F, 0x00)):
        assert rgb in colours, rgb

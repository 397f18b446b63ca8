"""Headless Chromium: a PNG of a report (README screenshot, render tests) and its DOM.

Debian package `chromium`. Chromium runs with a throw-away profile and every background
network feature off, so rendering a report never reaches the network.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from chainlab.errors import ChainlabError

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars",
)


class ScreenshotError(ChainlabError):
    """Chromium is missing, failed, or wrote nothing."""


def find_chromium() -> str | None:
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    binary = find_chromium()
    if binary is None:
        raise ScreenshotError("chromium not found (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="chainlab-chromium-") as profile:
        cmd = [binary, *FLAGS, f"--user-data-dir={profile}", *args]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise ScreenshotError(f"chromium did not finish within {timeout:.0f} s") from exc


def screenshot(html: Path, png: Path, width: int = 1400, height: int = 1800, timeout: float = 60.0) -> Path:
    """Render `html` (a local file) with headless Chromium into `png`; return `png`."""
    html, png = Path(html).resolve(), Path(png).resolve()
    if not html.is_file():
        raise ScreenshotError(f"no such file: {html}")
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    result = _run([f"--screenshot={png}", f"--window-size={width},{height}", html.as_uri()], timeout)
    if not png.is_file() or png.stat().st_size == 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise ScreenshotError(f"chromium wrote no screenshot (exit code {result.returncode}): {tail}")
    return png


def dump_dom(html: Path, timeout: float = 60.0) -> str:
    """The DOM of `html` after Chromium parsed and laid it out (`--dump-dom`)."""
    html = Path(html).resolve()
    if not html.is_file():
        raise ScreenshotError(f"no such file: {html}")
    result = _run(["--dump-dom", html.as_uri()], timeout)
    if result.returncode != 0 or not result.stdout.strip():
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise ScreenshotError(f"chromium --dump-dom failed (exit code {result.returncode}): {tail}")
    return result.stdout

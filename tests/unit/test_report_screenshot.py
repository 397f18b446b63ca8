"""Headless Chromium renders report.html: a non-trivial PNG, and the inline SVG in the DOM."""

from __future__ import annotations

import shutil
import struct

import pytest

from chainlab.report.html import render_run_report
from chainlab.report.screenshot import ScreenshotError, dump_dom, find_chromium, screenshot

from .test_report_helpers import scenario4_run

pytestmark = [
    pytest.mark.skipif(find_chromium() is None, reason="chromium not installed (Debian: apt-get install chromium)"),
    pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` not installed"),
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return render_run_report(scenario4_run(tmp_path_factory.mktemp("runs")))


def test_screenshot_is_a_real_png(report, tmp_path):
    png = screenshot(report, tmp_path / "shots" / "report.png")
    assert png == tmp_path / "shots" / "report.png"
    data = png.read_bytes()
    assert _png_size(data) == (1400, 1800)
    # a blank page of that size compresses to a few KB; text, tables and the diagram do not
    assert len(data) > 50_000


def test_dom_has_the_inline_svg_and_the_drop(report):
    dom = dump_dom(report)
    assert "<svg" in dom and "cali-tw-cali282b0776936" in dom
    assert 'data-drop="1"' in dom and ">PASS<" in dom


def test_missing_file_is_a_clean_error(tmp_path):
    with pytest.raises(ScreenshotError):
        screenshot(tmp_path / "nope.html", tmp_path / "x.png", timeout=60)

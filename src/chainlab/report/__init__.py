"""Reports of scenario runs: one HTML page per run, and the nightly summary.

Pure rendering: everything comes from a run directory (`analysis.json`, `diagram.svg`,
the evidence files); nothing here touches a lab.
"""

from chainlab.report.html import render_run_report
from chainlab.report.nightly import NightlySummary, find_previous_nightly, write_nightly
from chainlab.report.run import RunData, load_run

__all__ = ["NightlySummary", "RunData", "find_previous_nightly", "load_run", "render_run_report", "write_nightly"]

"""Reports of scenario runs: one HTML page per run, and the nightly summary.

Pure rendering: everything comes from a run directory (`analysis.json`, `diagram.svg`,
the evidence files); nothing here touches a lab.
"""

"""Scenario runs: mark the logs, snapshot rules, probe, collect, analyze, write evidence."""

"""Trace analysis: log lines → steps → packets → hook paths, verdicts and flows."""

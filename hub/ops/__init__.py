"""The operator console: lag and verdicts, metrics, dead letters and replay, operators and the dashboard."""

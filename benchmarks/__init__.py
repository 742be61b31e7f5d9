"""aprendiz's benchmark suite: `make bench` (full) and `make bench-quick`.

Results go to benchmarks/results/*.json; docs/benchmarks.md is regenerated from them
by benchmarks/report.py. Nothing here is a test: tests/benchmarks/ holds the smoke.
"""

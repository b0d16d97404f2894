"""QARR benchmarks: `python -m bench <overhead|cost|routing|scaling> [options]` (see docs/bench.md).

Never part of the unit test run; tests/bench runs each with tiny sizes as a smoke test.
"""

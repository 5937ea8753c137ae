"""Hoomi benchmarks against peers: `python -m bench --help` (or `just bench`).

Never part of the test suite (tests/test_bench_smoke.py only checks that a tiny run works).
"""

"""Benchmark suites for tools/benchmark.py."""

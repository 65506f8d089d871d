"""Benchmarks: run on purpose (``make bench`` or ``python -m bench.<name>``), never as timed tests."""

"""Benchmarks measuring buttress side by side with its peer libraries.

Run ``python -m benchmarks retry`` from the repository root; see docs/benchmarks.md.
"""

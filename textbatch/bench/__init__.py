"""Padding benchmarks: every batching strategy side by side, the peers' baselines, plots."""

"""Throughput and memory benchmarks; each prints a table and a final JSON line of ratios."""

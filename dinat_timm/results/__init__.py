"""Leaderboards: writing benchmark rows to CSV, merging, comparing, plotting."""
from .writer import append_rows, read_csv, rows_from_benchmark_json, write_csv_atomic

__all__ = ["append_rows", "read_csv", "rows_from_benchmark_json", "write_csv_atomic"]

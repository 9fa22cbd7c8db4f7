"""Leaderboards: writing benchmark rows to CSV, merging, comparing, plotting."""
__all__ = ["append_rows", "read_csv", "rows_from_benchmark_json", "write_csv_atomic"]


def __getattr__(name):
    # imported on first use: ``python -m dinat_timm.results --help`` should not wait for pandas
    if name in __all__:
        from . import writer

        return getattr(writer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

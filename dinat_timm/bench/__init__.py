"""What the benchmark suites measure, as plain functions (the suites in ``benchmarks/`` time them
with pytest-benchmark and write rows through ``dinat_timm.results.writer``)."""

"""Benchmarks: ``python -m benchmarks [--quick] [--soak]``. Each figure is printed next to a
raw-SQL reference measured in the same run on the same machine; ratios are what count."""

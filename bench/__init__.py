"""Benchmarks: scripts that measure the bridge against its limits (`make bench`).

Every figure is a ratio against a baseline measured in the same run, on the same machine,
over loopback, against local fakes only. See bench/RESULTS.md for the latest table.
"""

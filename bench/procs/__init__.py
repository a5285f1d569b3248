"""Entry points of the processes the benchmarks start: servers, the exporter, and the baselines.

Each is run as `python -m bench.procs.<name>`, so it has an interpreter (and a CPU budget) of its own.
Baselines print one JSON object as the last line of their standard output.
"""

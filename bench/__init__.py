"""Benchmarks of dli-exporter: `make bench` (bench.run_all) runs them and writes bench/results/."""

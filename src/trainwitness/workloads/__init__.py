"""Built-in training specs used by the demo, the tests and the benchmarks."""

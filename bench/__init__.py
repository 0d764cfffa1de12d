"""Benchmarks of the gateway. Each starts real servers as child processes on loopback ports,
drives them from the benchmark process, prints a ratio against a baseline measured in the same
run, and ends with one `RESULT <name> ...` line. See bench/README.md."""

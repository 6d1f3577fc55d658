"""Benchmarks and the chaos soak: runnable scenarios that print their figures (see docs/benchmarks.md and
docs/reliability.md). Nothing here is imported by the watchdog itself."""

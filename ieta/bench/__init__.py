"""Benchmarks, run as ``python -m ieta.bench <name> [args]``; each is a module with ``main(argv) -> int``."""

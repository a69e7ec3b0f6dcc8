"""Tooling around the system, apart from operating it (deploy/): the benchmarks (`bench/`),
fault injection (`chaos/`), sample and hostile data (`data/`), the demo and the stream-vs-batch
check (`verify`). Reached through the `profiles` command (deploy/cli/tools.py)."""

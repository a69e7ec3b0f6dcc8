"""Offline at scale: the batch path and point-in-time training sets over files, on local worker
processes or on Spark, reading and writing JSONL or Parquet. Every engine runs the pure feature
core in `features/` through one seam (`offline.core`)."""


class OfflineError(Exception):
    """Bad input or a missing dependency, said in one sentence (the CLI prints it and exits 1)."""

"""Bootstrap from the lake (docs/BOOTSTRAP.md): users' states built from a log file by the
offline engines, written into the state changelog, published once, and handed over to the
stream at known offsets or at a time."""

"""The chaos run: seeded worker and broker faults under load, and a verdict read from a
stable group."""

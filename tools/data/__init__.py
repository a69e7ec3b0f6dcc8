"""Data generators for demos, benchmarks and tests: sample users and events, hostile payloads."""

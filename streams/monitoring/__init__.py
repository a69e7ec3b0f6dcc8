"""What a worker tells about itself: its counters, and the monitor behind /metrics, /monitor,
the quality scan and the alerts."""

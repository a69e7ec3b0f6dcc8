"""The worker process itself: its garbage-collection policy, the pause watch, and when it
restarts itself in place."""

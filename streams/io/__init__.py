"""The worker's Kafka I/O outside the pipeline's logic: events as raw column batches from the
fetch, the producers of outputs and changelog records with their settings, topics, the item
feed, event-log reads and dead-letter records."""

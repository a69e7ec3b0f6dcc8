"""Pure feature computation for 106/107/108/110 (FEATURES.md); no Kafka in here."""

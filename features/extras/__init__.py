"""Extra features, one module each (docs/EXTENDING.md): pure functions of a user's window
metrics, named in config under `extra_features`."""

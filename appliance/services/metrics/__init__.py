"""Resource metrics of instances and nodes: sampled from the engines (sampling.py),
stored with rollups and purged (store.py), read as series over a window (series.py)."""

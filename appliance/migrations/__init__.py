"""Numbered schema migrations, applied in order at start-up and by `appliance migrate`.

Each `NNNN_name.py` defines `up(migrator, db)` and declares the tables it creates as
frozen models of its own, so later changes to `appliance.models` never rewrite history.
A migration never loses data: columns are added with defaults, and data is copied before
anything is dropped.
"""

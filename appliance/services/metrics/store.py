"""Where samples go: one row per subject, resolution and bucket, with rollups made as
samples arrive.

Every sample is added at once to the row of its minute, its 5 minutes and its hour
(`STEPS`): the row holds the sum of each figure and the count of samples `n` (and
`nr`, those with rates: a first sample after a start has none), so the average of a
bucket is sum / n and a coarser bucket is the sum of finer rows. Writing
three rows per sample costs three upserts in one `executemany` per tick; in exchange no
rollup job exists that could fall behind, and a re-run tick adds its sample again
(twice in one minute weighs that minute's average, nothing more).

A figure missing from a sample (None: the engine does not report it, or a rate with no
earlier counters) adds nothing to its sum; a bucket whose every sample missed it keeps
NULL and is shown as missing. (Were a level figure reported by some samples of a bucket
and not others, its average would be low; an engine reports one or never.)

Resolutions are kept as the settings say (minute 24 h, 5 minutes 7 days, hour 90 days
by default) and `purge` deletes what is older, subject by
subject along the table's key (a range delete each, no scan).

Size: 500 instances sampled each minute for 30 days keep 500 x (1,440 + 2,016 + 720)
rows, about 2.1 million: about 210 MiB on SQLite, some 100 bytes a row with the key
(measured by scripts/bench, part `metrics`); the hourly rows of days 31 to 90 add 15 MiB
per 100 instances.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from appliance import config
from appliance.db import database, raw_sql
from appliance.models import Instance, Node
from appliance.services import settings

STEPS = (60, 300, 3600)
STEP_NAMES = {60: "1m", 300: "5m", 3600: "1h"}
RETENTION_SETTINGS = {60: ("INSTANCE_METRICS_MINUTE_HOURS", 3600),
                      300: ("INSTANCE_METRICS_FIVE_MINUTE_DAYS", 86400),
                      3600: ("INSTANCE_METRICS_HOURLY_DAYS", 86400)}


class Table:
    """One metrics table: its name, the subject's column and the figures."""

    def __init__(self, name: str, subject: str, fields: Sequence[str],
                 rates: Sequence[str] = ()) -> None:
        self.name, self.subject, self.fields = name, subject, tuple(fields)
        self.rates = tuple(rates)  # figures counted by `nr` (the others by `n`)
        counts = ("n", "nr") if self.rates else ("n",)
        columns = (subject, "step", "at", *counts, *self.fields)
        names = ", ".join(f'"{c}"' for c in columns)
        updates = ", ".join(
            [f'"{c}" = "{name}"."{c}" + excluded."{c}"' for c in counts]
            + [f'"{f}" = CASE WHEN excluded."{f}" IS NULL THEN "{name}"."{f}" '
               f'ELSE COALESCE("{name}"."{f}", 0) + excluded."{f}" END' for f in self.fields])
        marks = ", ".join(["?"] * len(columns))
        # Names are this module's constants, never input; values are bound.
        self.upsert = (f'INSERT INTO "{name}" ({names}) VALUES ({marks}) '  # noqa: S608
                       f'ON CONFLICT ("{subject}", "step", "at") DO UPDATE SET {updates}')
        self.purge_sql = (f'DELETE FROM "{name}" WHERE "{subject}" = ? '  # noqa: S608
                          'AND "step" = ? AND "at" < ?')


INSTANCES = Table("instance_metric", "instance_id", ("cpu", "memory", "rx", "tx", "disk"),
                  rates=("cpu", "rx", "tx"))
NODES = Table("node_metric", "node_id", ("load", "memory_used", "memory_total",
                                         "storage_used", "storage_total", "running"))


def retention(step: int) -> dt.timedelta:
    """How long rows of resolution `step` are kept (the settings)."""
    name, unit = RETENTION_SETTINGS[step]
    return dt.timedelta(seconds=settings.get(config.active(), name) * unit)


def epoch(at: dt.datetime) -> int:
    return int(at.timestamp())


def add(table: Table, rows: Sequence[tuple[str, dict[str, int | None]]],
        at: dt.datetime) -> int:
    """Add one sample per subject (its figures by field name) taken at `at` to the
    minute, 5-minute and hour rows; inside the caller's transaction. Returns rows
    written."""
    when = epoch(at)
    params = []
    for subject, values in rows:
        figures = [values.get(field) for field in table.fields]
        counts = (1, int(any(values.get(f) is not None for f in table.rates))) \
            if table.rates else (1,)
        for step in STEPS:
            params.append((subject, step, when - when % step, *counts, *figures))
    if params:
        sql = table.upsert if database.param == "?" else table.upsert.replace("?", "%s")
        database.cursor().executemany(sql, params)
    return len(params)


def purge(now: dt.datetime) -> dict[str, int]:
    """Delete rows of each resolution older than its retention (plus one bucket, so a
    window as long as the retention is whole); returns rows deleted per table."""
    counts = {}
    for table, model in ((INSTANCES, Instance), (NODES, Node)):
        ids: Any = model.select(model.id).tuples()
        subjects = [row for (row,) in ids]
        total = 0
        for step in STEPS:
            cutoff = epoch(now - retention(step)) - step
            cutoff -= cutoff % step
            with database.atomic():
                for subject in subjects:
                    total += raw_sql(table.purge_sql, (subject, step, cutoff)).rowcount
        counts[table.name] = total
    return counts

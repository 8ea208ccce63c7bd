"""Server-side SVG charts for the dashboard: the geometry of bar charts (money per day;
any whole-number series over time with `series_chart`) and of line charts (resource
metrics with `line_chart`: one or two series, broken where a point is missing).

`bar_chart` turns points (a day and an amount in integer minor units) into a `BarChart`:
bar rectangles, value-axis ticks on round amounts and a few day labels, all in the
coordinates of the chart's `viewBox`, so the SVG scales to its container. The SVG itself
is written by the template `billing/_chart.html`, where Jinja's autoescaping covers every
label and tooltip; nothing here builds markup.

Phones get their own geometry (`NARROW`: a small viewBox with few labels, so the text is
still about 11 px on a 375 px screen) and desktops theirs (`WIDE`); the page draws both and
CSS shows the one that fits (`.chart-narrow`, `.chart-wide`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from appliance.services import money


@dataclass(frozen=True)
class Size:
    width: int
    height: int
    font: int
    max_day_labels: int


WIDE = Size(760, 250, 12, 8)
NARROW = Size(320, 210, 12, 4)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    tooltip: str  # "12 Mar 2025: 1.20 EUR"


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class BarChart:
    size: Size
    left: float
    top: float
    right: float
    bottom: float
    bars: tuple[Bar, ...]
    value_ticks: tuple[Tick, ...]  # position: y
    day_ticks: tuple[Tick, ...]  # position: x of the label's centre
    currency: str
    total: int
    empty: bool  # every amount is zero


def axis_amount(minor: int, currency: str) -> str:
    """An axis label: the amount in the major unit without the currency ("1.5", "20")."""
    return money.compact(minor, currency)


def nice_step(top: int, ticks: int = 4) -> int:
    """A round step (1, 2 or 5 times a power of ten, in minor units) for about `ticks`
    intervals up to `top`; at least 1."""
    raw = max(top, 1) / ticks
    power = 1
    while power * 10 <= raw:
        power *= 10
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            return factor * power
    return 10 * power  # pragma: no cover - the loop always returns


def _day_label(day: dt.date) -> str:
    return f"{day.day} {day:%b}"


def bar_chart(points: Sequence[tuple[dt.date, int]], currency: str, size: Size) -> BarChart:
    """The geometry of a bar per day (oldest first) with amounts in minor units."""
    return series_chart(
        points, size, axis_label=lambda value: axis_amount(value, currency),
        tooltip=lambda day, amount: f"{day:%a} {_day_label(day)} {day.year}: "
                                    f"{money.format(amount, currency)}",
        x_label=_day_label, empty_step=10 ** money.exponent(currency),
        currency=currency)


def series_chart(points: Sequence[tuple[Any, int]], size: Size, *,
                 axis_label: Callable[[int], str], tooltip: Callable[[Any, int], str],
                 x_label: Callable[[Any], str], empty_step: int = 1,
                 currency: str = "") -> BarChart:
    """The geometry of a bar per point (oldest first, non-negative whole values): any
    x (a day, the start of a bucket) labelled by `x_label`, values by `axis_label`."""
    amounts = [amount for _, amount in points]
    highest = max([*amounts, 0])
    step = nice_step(highest) if highest > 0 else empty_step
    top_value = step * max(1, -(-highest // step))
    labels = [axis_label(step * i) for i in range(top_value // step + 1)]
    char = size.font * 0.62
    left = max(len(label) for label in labels) * char + 10
    top, right, bottom = size.font, size.width - 6, size.height - size.font * 2.2
    plot_height = bottom - top
    value_ticks = tuple(
        Tick(round(bottom - plot_height * (i * step) / top_value, 2), label)
        for i, label in enumerate(labels))
    count = max(len(points), 1)
    slot = (right - left) / count
    gap = min(slot * 0.2, 6) if slot > 3 else 0
    bars = []
    for index, (day, amount) in enumerate(points):
        height = plot_height * max(amount, 0) / top_value
        # A day with usage stays visible even when it is tiny next to the biggest one.
        if amount > 0:
            height = max(height, 1.5)
        bars.append(Bar(x=round(left + index * slot + gap / 2, 2), y=round(bottom - height, 2),
                        width=round(max(slot - gap, 0.8), 2), height=round(height, 2),
                        tooltip=tooltip(day, amount)))
    day_ticks = []
    if points:
        every = max(1, -(-len(points) // size.max_day_labels))
        # Count back from the last day, so today is always labelled.
        chosen = sorted(range(len(points) - 1, -1, -every))
        half_label = char * 3.5
        for index in chosen:
            centre = left + index * slot + slot / 2
            centre = min(max(centre, left + half_label), right - half_label)
            day_ticks.append(Tick(round(centre, 2), x_label(points[index][0])))
    return BarChart(size=size, left=round(left, 2), top=top, right=right,
                    bottom=round(bottom, 2), bars=tuple(bars), value_ticks=value_ticks,
                    day_ticks=tuple(day_ticks), currency=currency.upper(),
                    total=sum(amounts), empty=highest <= 0)


def both_sizes(points: Sequence[tuple[dt.date, int]], currency: str) -> dict[str, BarChart]:
    """The desktop and the phone geometry of the same points."""
    return {"wide": bar_chart(points, currency, WIDE),
            "narrow": bar_chart(points, currency, NARROW)}


# Line charts (resource metrics) -----------------------------------------------------


@dataclass(frozen=True)
class Trace:
    """One series drawn as polylines; a missing point breaks the line (no zero drawn)."""

    css: str  # the class that colours it: line-1, line-2
    label: str
    segments: tuple[str, ...]  # SVG `points` of each unbroken run
    dots: tuple[tuple[float, float], ...]  # single points between two gaps


@dataclass(frozen=True)
class LineChart:
    size: Size
    left: float
    top: float
    right: float
    bottom: float
    traces: tuple[Trace, ...]
    value_ticks: tuple[Tick, ...]
    time_ticks: tuple[Tick, ...]
    empty: bool  # no point at all


def line_chart(times: Sequence[dt.datetime], lines: Sequence[tuple[str, Sequence[float | None]]],
               size: Size, *, axis_label: Callable[[float], str],
               x_label: Callable[[dt.datetime], str], top: float | None = None,
               binary: bool = False) -> LineChart:
    """The geometry of one or two series over the same times (oldest first). The value
    axis runs from 0 to `top` (the plan's limit, 100 %) or else to a round step above the
    highest value (round in powers of 1024 when `binary`: bytes)."""
    present = [v for _, values in lines for v in values if v is not None]
    highest = max([*present, 0.0])
    top_value: float
    ticks: list[float]
    if top is None or top <= 0:
        unit = 1  # bytes step in 1, 2, 5 x a power of 1024 (2 KiB, not 2,000 B)
        while binary and highest / unit >= 1024:
            unit *= 1024
        step = nice_step(math.ceil(highest / unit)) * unit if highest > 0 else 1
        top_value = step * max(1, math.ceil(highest / step))
        ticks = [step * i for i in range(int(top_value // step) + 1)]
    else:  # a limit: its half and itself (1 GiB, not 1,000,000,000 bytes, is round here)
        top_value = top
        ticks = [0, top / 2, top]
    labels = [axis_label(t) for t in ticks]
    char = size.font * 0.62
    left = max(len(label) for label in labels) * char + 10
    top_edge, right, bottom = size.font, size.width - 6, size.height - size.font * 2.2
    height = bottom - top_edge
    value_ticks = tuple(Tick(round(bottom - height * t / top_value, 2), label)
                        for t, label in zip(ticks, labels, strict=True))
    count = max(len(times), 1)
    slot = (right - left) / max(count - 1, 1)

    def point(index: int, value: float) -> tuple[float, float]:
        return (round(left + index * slot, 2),
                round(bottom - height * min(max(value, 0.0), top_value) / top_value, 2))

    traces = []
    for number, (label, values) in enumerate(lines, start=1):
        runs: list[list[tuple[float, float]]] = [[]]
        for index, value in enumerate(values):
            if value is None:
                if runs[-1]:
                    runs.append([])
                continue
            runs[-1].append(point(index, value))
        segments = tuple(" ".join(f"{x},{y}" for x, y in run) for run in runs if len(run) > 1)
        dots = tuple(run[0] for run in runs if len(run) == 1)
        traces.append(Trace(f"line-{number}", label, segments, dots))
    time_ticks = []
    if times:
        every = max(1, -(-len(times) // size.max_day_labels))
        half_label = char * 3
        for index in sorted(range(len(times) - 1, -1, -every)):
            centre = min(max(left + index * slot, left + half_label), right - half_label)
            time_ticks.append(Tick(round(centre, 2), x_label(times[index])))
    return LineChart(size=size, left=round(left, 2), top=top_edge, right=right,
                     bottom=round(bottom, 2), traces=tuple(traces), value_ticks=value_ticks,
                     time_ticks=tuple(time_ticks), empty=not present)

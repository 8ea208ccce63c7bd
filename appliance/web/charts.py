"""Server-side SVG charts for the dashboard: the geometry of bar charts (money per day;
any whole-number series over time with `series_chart`).

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

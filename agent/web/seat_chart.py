"""Server-side SVG geometry for the status page's charts (no script, no third-party asset:
the page's CSP allows neither inline code nor other origins).

Two charts share the day axis: seats per day (licensed as a step line, consumed as an area,
the near-full threshold dashed, the busiest day marked) and users queued and refused per day
as bars. The template draws what these functions compute; every point carries its day and
value (``data-day``, ``data-value``) and a ``<title>`` tooltip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.domain.seat_history import DayFigures, near_full_from

WIDTH = 720
SEATS_HEIGHT = 220
WAITS_HEIGHT = 130
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 18, 26
X_LABELS = 6


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class XLabel:
    x: float
    label: str


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    day: str
    value: int
    title: str


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    day: str
    value: int
    title: str


@dataclass
class Chart:
    width: int
    height: int
    plot_left: float
    plot_right: float
    plot_top: float
    plot_bottom: float
    ticks: list[Tick] = field(default_factory=list)
    x_labels: list[XLabel] = field(default_factory=list)


@dataclass
class SeatsChart(Chart):
    licensed_path: str = ""
    near_full_path: str = ""
    consumed_area: str = ""
    consumed_line: str = ""
    consumed_points: list[Point] = field(default_factory=list)
    licensed_points: list[Point] = field(default_factory=list)
    peak: Point | None = None


@dataclass
class WaitsChart(Chart):
    queued: list[Bar] = field(default_factory=list)
    refused: list[Bar] = field(default_factory=list)
    with_refused: bool = False


def nice_max(value: int, ticks: int = 4) -> tuple[int, int]:
    """A round axis maximum at or above ``value`` (and at least ``ticks``) and its tick step
    (1, 2, 2.5 or 5 times a power of ten), so the grid reads 0, 250, 500, ... rather than 0,
    237, 474."""
    value = max(value, ticks)
    raw = value / ticks
    power = 1
    while power * 10 <= raw:
        power *= 10
    steps = (1, 2, 2.5, 5, 10) if power >= 10 else (1, 2, 5, 10)
    step = int(next(m * power for m in steps if m * power >= raw))
    top = -(-value // step) * step
    return top, step


def _frame(days: Sequence[DayFigures], height: int, top_value: int) -> tuple[Chart, float, int]:
    chart = Chart(
        width=WIDTH,
        height=height,
        plot_left=LEFT,
        plot_right=WIDTH - RIGHT,
        plot_top=TOP,
        plot_bottom=height - BOTTOM,
    )
    axis_max, step = nice_max(top_value)
    span = chart.plot_bottom - chart.plot_top
    chart.ticks = [
        Tick(y=round(chart.plot_bottom - span * v / axis_max, 1), label=f"{v:,}")
        for v in range(0, axis_max + 1, step)
    ]
    slot = (chart.plot_right - chart.plot_left) / max(len(days), 1)
    every = max(1, -(-len(days) // X_LABELS))
    chart.x_labels = [
        XLabel(x=round(chart.plot_left + slot * (i + 0.5), 1), label=d.day.strftime("%b %d"))
        for i, d in enumerate(days)
        if i % every == 0
    ]
    return chart, slot, axis_max


def _y(chart: Chart, value: float, axis_max: int) -> float:
    span = chart.plot_bottom - chart.plot_top
    return round(chart.plot_bottom - span * value / axis_max, 1)


def seats_chart(
    days: Sequence[DayFigures],
    busiest: DayFigures | None,
    near_full_percent: int,
    low_seats_threshold: int,
) -> SeatsChart:
    top = max([d.licensed or 0 for d in days] + [d.consumed or 0 for d in days] + [1])
    frame, slot, axis_max = _frame(days, SEATS_HEIGHT, top)
    chart = SeatsChart(**frame.__dict__)
    licensed: list[str] = []
    near: list[str] = []
    area: list[str] = []
    line: list[str] = []
    last_x = last_y = 0.0
    for i, d in enumerate(days):
        if d.licensed is None or d.consumed is None:
            continue
        x0 = round(chart.plot_left + slot * i, 1)
        x1 = round(chart.plot_left + slot * (i + 1), 1)
        xc = round(chart.plot_left + slot * (i + 0.5), 1)
        yl = _y(chart, d.licensed, axis_max)
        yn = _y(chart, near_full_from(d.licensed, near_full_percent, low_seats_threshold), axis_max)
        yc = _y(chart, d.consumed, axis_max)
        licensed.append(f"{'M' if not licensed else 'L'}{x0},{yl} L{x1},{yl}")
        near.append(f"{'M' if not near else 'L'}{x0},{yn} L{x1},{yn}")
        if not area:
            area.append(f"M{x0},{chart.plot_bottom} L{x0},{yc}")
        area.append(f"L{xc},{yc}")
        line.append(f"{'M' if not line else 'L'}{xc},{yc}")
        day = d.day.isoformat()
        chart.consumed_points.append(
            Point(xc, yc, day, d.consumed, f"{day}: {d.consumed:,} consumed of {d.licensed:,}")
        )
        chart.licensed_points.append(
            Point(xc, yl, day, d.licensed, f"{day}: {d.licensed:,} licensed")
        )
        if busiest is not None and d.day == busiest.day:
            chart.peak = Point(xc, yc, day, d.consumed, f"peak {d.consumed:,} ({day})")
        last_x = x1
        last_y = yc
    if area:
        area.append(f"L{last_x},{last_y} L{last_x},{chart.plot_bottom} Z")
    chart.licensed_path = " ".join(licensed)
    chart.near_full_path = " ".join(near)
    chart.consumed_area = " ".join(area)
    chart.consumed_line = " ".join(line)
    return chart


def waits_chart(days: Sequence[DayFigures], with_refused: bool) -> WaitsChart:
    top = max([d.queued for d in days] + [d.refused if with_refused else 0 for d in days] + [1])
    frame, slot, axis_max = _frame(days, WAITS_HEIGHT, top)
    chart = WaitsChart(**frame.__dict__, with_refused=with_refused)
    bars = 2 if with_refused else 1
    width = round(slot * 0.8 / bars, 1)
    for i, d in enumerate(days):
        x = chart.plot_left + slot * (i + 0.1)
        day = d.day.isoformat()
        series = [("queued", d.queued, chart.queued)]
        if with_refused:
            series.append(("refused", d.refused, chart.refused))
        for k, (label, value, out) in enumerate(series):
            if value <= 0:
                continue
            y = _y(chart, value, axis_max)
            out.append(
                Bar(
                    x=round(x + k * width, 1),
                    y=y,
                    width=width,
                    height=round(chart.plot_bottom - y, 1),
                    day=day,
                    value=value,
                    title=f"{day}: {value:,} {label}",
                )
            )
    return chart

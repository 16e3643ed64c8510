"""Server-side SVG charts: geometry computed here, drawn by the `chart` template macro (text autoescaped).

No charting library and no script: a chart is a list of rectangles and labels, so it renders offline, under a
strict Content-Security-Policy, and in any browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 12, 34


@dataclass
class Bar:
    x: float
    y: float
    w: float
    h: float
    cls: str
    title: str


@dataclass
class Label:
    x: float
    y: float
    text: str
    anchor: str = "middle"


@dataclass
class Chart:
    title: str
    width: int = WIDTH
    height: int = HEIGHT
    bars: list[Bar] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    grid: list[float] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)  # (css class, name)
    empty: bool = False


def _nice_max(value: float) -> float:
    """A round axis top at or above value (1, 2, 5 × 10^k)."""
    if value <= 0:
        return 1
    step = 1.0
    while step * 10 <= value:
        step *= 10
    for m in (1, 2, 5, 10):
        if m * step >= value:
            return m * step
    return 10 * step


def _axis(chart: Chart, top: float) -> None:
    """Grid lines at whole counts: one per unit up to 5, else five steps (the top is 1, 2 or 5 × 10^k)."""
    plot_h = chart.height - TOP - BOTTOM
    steps = int(top) if top <= 5 else 5
    for i in range(steps + 1):
        value = top * i / steps
        y = chart.height - BOTTOM - plot_h * i / steps
        chart.grid.append(y)
        chart.labels.append(Label(LEFT - 6, y + 4, f"{value:g}", "end"))


def _x_labels(chart: Chart, labels: list[str], slot: float) -> None:
    every = max(1, len(labels) // 12)
    for i, text in enumerate(labels):
        if i % every == 0:
            chart.labels.append(Label(LEFT + slot * (i + 0.5), chart.height - BOTTOM + 16, text))


def _frame(chart: Chart, peak: float, labels: list[str]) -> tuple[float, float, float]:
    """Axis and grid for a bar chart peaking at `peak`: returns (axis top, plot height, slot width)."""
    chart.empty = peak <= 0
    top = _nice_max(peak)
    _axis(chart, top)
    return top, chart.height - TOP - BOTTOM, (chart.width - LEFT - RIGHT) / max(1, len(labels))


def grouped(title: str, labels: list[str], series: dict[str, list[int]]) -> Chart:
    """Side-by-side bars per slot, one per series (e.g. posted / completed / verified per hour)."""
    chart = Chart(title, legend=[(f"s{i}", name) for i, name in enumerate(series)])
    top, plot_h, slot = _frame(chart, max((v for values in series.values() for v in values), default=0), labels)
    width = slot * 0.8 / max(1, len(series))
    for s, (name, values) in enumerate(series.items()):
        for i, v in enumerate(values):
            if v <= 0:
                continue
            h = plot_h * v / top
            x = LEFT + slot * i + slot * 0.1 + width * s
            chart.bars.append(Bar(x, chart.height - BOTTOM - h, width, h, f"s{s}", f"{labels[i]} {name}: {v}"))
    _x_labels(chart, labels, slot)
    return chart


def stacked(title: str, labels: list[str], series: dict[str, list[int]], classes: dict[str, str]) -> Chart:
    """Stacked bars per slot (e.g. verdicts per hour)."""
    chart = Chart(title, legend=[(classes[name], name) for name in series])
    totals = [sum(values[i] for values in series.values()) for i in range(len(labels))]
    top, plot_h, slot = _frame(chart, max(totals, default=0), labels)
    for i in range(len(labels)):
        base: float = chart.height - BOTTOM
        for name, values in series.items():
            v = values[i]
            if v <= 0:
                continue
            h = plot_h * v / top
            base -= h
            chart.bars.append(Bar(LEFT + slot * i + slot * 0.15, base, slot * 0.7, h, classes[name],
                                  f"{labels[i]} {name}: {v}"))
    _x_labels(chart, labels, slot)
    return chart


def horizontal(title: str, rows: list[tuple[str, float, str]]) -> Chart:
    """One horizontal bar per row: (name, value, caption), e.g. tokens generated per model."""
    rows = rows[:12]
    height = TOP + 26 * max(1, len(rows)) + 10
    chart = Chart(title, height=height)
    peak = max((v for _, v, _ in rows), default=0)
    chart.empty = peak <= 0
    left = 170
    plot_w = chart.width - left - 160
    for i, (name, value, caption) in enumerate(rows):
        y = TOP + 26 * i
        w = plot_w * value / peak if peak > 0 else 0
        chart.bars.append(Bar(left, y, max(w, 1), 18, "s0", f"{name}: {caption}"))
        chart.labels.append(Label(left - 8, y + 13, name[:28], "end"))
        chart.labels.append(Label(left + w + 8, y + 13, caption, "start"))
    return chart

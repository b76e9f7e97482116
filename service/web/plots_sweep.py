"""Pictures of what mattered in a sweep: a parallel-coordinates chart (each run a line across
its varied fields and the metric) and the metric against one field (a scatter).

Pure functions like ``plots``: ``service.importance.SweepPoints`` in, PNG bytes out, a Figure
of their own per call. Every name and value is drawn as it is (``parse_math=False`` on text,
``$`` escaped in tick labels, which have no such switch)."""

from __future__ import annotations

import math

from .plots import figure_bytes, format_value

FIGSIZE = (9.0, 4.8)


def _literal(text: str) -> str:
    """A tick label drawn as written: an unescaped ``$`` would start mathematics."""
    return text.replace("$", r"\$")


def _label(metric: str) -> str:
    return metric.replace("_", " ")


def _norm(axis, position: float) -> float:
    """A value's height on a parallel axis, 0 (bottom) to 1 (top)."""
    if axis.scale == "category":
        n = len(axis.categories)
        return 0.5 if n < 2 else position / (n - 1)
    low, high = axis.low, axis.high
    if axis.scale == "log":
        low, high, position = math.log10(low), math.log10(high), math.log10(position)
    return 0.5 if high <= low else (position - low) / (high - low)


def _ticks(axis) -> list[tuple[float, str]]:
    """(height, label) of the ticks drawn beside a parallel axis."""
    if axis.scale == "category":
        return [(_norm(axis, i), format_value(c)) for i, c in enumerate(axis.categories)]
    if axis.scale == "log":
        mid = math.sqrt(axis.low * axis.high)
    else:
        mid = (axis.low + axis.high) / 2
    return [(_norm(axis, v), f"{v:.3g}") for v in (axis.low, mid, axis.high)]


def _empty(ax, message: str):
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center",
            color="#666666", parse_math=False)
    ax.set_xticks([])
    ax.set_yticks([])


def _metric_axis(data):
    """The metric as the last parallel axis: linear, or log when positive over decades."""
    from service.importance import Axis

    values = [value for _, _, value in data.points]
    low, high = min(values), max(values)
    scale = "log" if low > 0 and high / low >= 100 else "linear"
    return Axis(data.metric, scale, low=low, high=high)


def parallel_figure(data):
    """Each run a line across the sweep's varied fields and the metric, coloured by the
    metric (dark: low, the best drawn on top)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(f"{data.title}: {_label(data.metric)} by field ({len(data.points)} runs)",
                 parse_math=False)
    if not data.points or not data.axes:
        _empty(ax, "no field varies yet between succeeded runs" if data.points
               else "no succeeded run yet")
        return fig
    axes = list(data.axes) + [_metric_axis(data)]
    cmap = colormaps["viridis"]
    metric = axes[-1]
    ordered = sorted(data.points, key=lambda p: -p[2])  # worst first, best on top
    for run_id, config, value in ordered:
        ys = [_norm(a, a.position(config[a.name])) for a in axes[:-1]]
        ys.append(_norm(metric, value))
        shade = _norm(metric, value)
        ax.plot(range(len(axes)), ys, color=cmap(0.9 * shade), linewidth=1.4, alpha=0.8,
                marker="o", markersize=3, gid=f"run-{run_id}")
    for x, axis in enumerate(axes):
        ax.plot([x, x], [0, 1], color="#333333", linewidth=0.8, zorder=0)
        for y, text in _ticks(axis):
            ax.text(x + 0.04, y, text, fontsize=7, va="center", ha="left", color="#333333",
                    parse_math=False)
        suffix = " (log)" if axis.scale == "log" else ""
        ax.text(x, -0.08, axis.name + suffix, ha="center", va="top", fontsize=9,
                parse_math=False, gid=f"axis-{x}")
    ax.set_xlim(-0.2, len(axes) - 0.6)
    ax.set_ylim(-0.18, 1.05)
    ax.axis("off")
    return fig


def scatter_figure(data, field: str):
    """The metric of each run against the value of ``field`` (a log x-axis for a log field,
    the categories in order for a categorical one)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(f"{data.title}: {_label(data.metric)} against {field}", parse_math=False)
    axis = next((a for a in data.axes if a.name == field), None)
    if axis is None or not data.points:
        _empty(ax, f"{field} does not vary between succeeded runs" if data.points
               else "no succeeded run yet")
        return fig
    xs = [axis.position(config[field]) for _, config, _ in data.points]
    ys = [value for _, _, value in data.points]
    best = min(range(len(ys)), key=lambda i: ys[i])
    ax.scatter(xs, ys, s=28, color="#2f6fde", alpha=0.8, edgecolors="white", linewidths=0.5)
    ax.scatter([xs[best]], [ys[best]], s=80, facecolors="none", edgecolors="#d9480f",
               linewidths=1.6, label="best")
    if axis.scale == "log":
        ax.set_xscale("log")
    elif axis.scale == "category":
        ax.set_xticks(range(len(axis.categories)),
                      [_literal(format_value(c)) for c in axis.categories])
        ax.set_xlim(-0.5, len(axis.categories) - 0.5)
    if min(ys) > 0 and max(ys) / min(ys) >= 100:
        ax.set_yscale("log")
    ax.set_xlabel(field + (" (log scale)" if axis.scale == "log" else ""), parse_math=False)
    ax.set_ylabel(_label(data.metric), parse_math=False)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def parallel_png(data) -> bytes:
    """PNG of ``parallel_figure``."""
    return figure_bytes(parallel_figure(data), "png")


def scatter_png(data, field: str) -> bytes:
    """PNG of ``scatter_figure``."""
    return figure_bytes(scatter_figure(data, field), "png")

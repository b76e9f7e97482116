"""Pictures of runs: error curves (PNG) and the annotated network (SVG).

Pure functions, data in and bytes out, drawn with matplotlib's object-oriented API (a Figure
of its own per call, no pyplot and its global state, so API threads can draw at once).
matplotlib is imported on first use, so importing this module (and starting the API) stays
fast. Names, labels and titles are drawn as they are (``parse_math=False``: matplotlib reads
text between two ``$`` as mathematics, and fails on most of it); only our own labels of the
network are mathematics.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field

import numpy as np

# Edge colours of the network: positive weights blue, negative red (zero: grey).
POSITIVE = "#1f5fbf"
NEGATIVE = "#d62728"
ZERO = "#9a9a9a"
# Layers wider than this are drawn with their first and last units and "⋮ N more" between.
MAX_NODES = 12
METRIC_NAMES = {"error": "error E", "val_error": "validation error"}


@dataclass
class Curve:
    """One line of an error plot: finite (epoch, value) points and whether the run diverged
    (its error went non-finite after the last point)."""

    label: str
    epochs: list = field(default_factory=list)
    values: list = field(default_factory=list)
    diverged: bool = False


def _get(row, name):
    return row.get(name) if isinstance(row, dict) else getattr(row, name, None)


def curve_of(rows, label: str, metric: str = "error", status: str | None = None) -> Curve:
    """A Curve from history rows (dicts or Epoch rows with ``epoch`` and ``metric``; None
    or non-finite values are left out). It is marked diverged when ``status`` is
    "diverged", or when the last row's error is missing (non-finite errors are stored as
    NULL)."""
    epochs, values = [], []
    for row in rows:
        value = _get(row, metric)
        if value is not None and math.isfinite(value):
            epochs.append(int(_get(row, "epoch")))
            values.append(float(value))
    last = _get(rows[-1], "error") if rows else 0.0
    diverged = status == "diverged" or last is None or not math.isfinite(last)
    return Curve(label=label, epochs=epochs, values=values, diverged=bool(rows) and diverged)


def format_value(value) -> str:
    """A spec value as a short label: 0.001, relu, [2,8,1]."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def config_label(config: dict) -> str:
    """``learning_rate=0.001, batch_size=8``: the varied fields of a sweep's cell."""
    return ", ".join(f"{name}={format_value(config[name])}" for name in sorted(config))


def varied_fields(specs: list[dict]) -> list[str]:
    """The spec fields whose values differ between ``specs`` (name and tags left out)."""
    names = sorted({name for spec in specs for name in spec} - {"name", "tags"})
    return [name for name in names
            if len({json.dumps(spec.get(name), sort_keys=True) for spec in specs}) > 1]


def _colors(n: int):
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](k) for k in range(n)]
    cmap = colormaps["viridis"]
    return [cmap(k / (n - 1) * 0.92) for k in range(n)]


def error_curves_figure(curves: list[Curve], *, log: bool = False, metric: str = "error",
                        title: str | None = None):
    """The matplotlib Figure of ``curves``: one labelled line per curve (error per epoch),
    a log y-axis with ``log``, each diverged curve ending in an x marked "diverged"."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 4.8), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    drawn = [c for c in curves if c.values]
    colors = _colors(len(drawn))
    ends = []
    for curve, color in zip(drawn, colors):
        ax.plot(curve.epochs, curve.values, color=color, linewidth=1.6, label=curve.label,
                marker="o" if len(curve.values) == 1 else None)
        if curve.diverged:
            ends.append((curve, color))
    if log:
        ax.set_yscale("log")
    elif ends:
        # A diverging run climbs by orders of magnitude: keep the others readable and let it
        # leave the top of the axes.
        starts = [c.values[0] for c in drawn]
        ceiling = 3.0 * max(starts)
        tops = [max(c.values) for c in drawn if max(c.values) <= ceiling]
        top = max(tops) if tops else ceiling
        ax.set_ylim(bottom=min(0.0, min(min(c.values) for c in drawn)), top=top * 1.08)
    low, high = ax.get_ylim()
    for curve, color in ends:
        x, y = curve.epochs[-1], curve.values[-1]
        y = min(max(y, low), high)
        ax.plot([x], [y], marker="X", markersize=10, color=color, markeredgecolor="black",
                markeredgewidth=0.6, linestyle="none", label="_diverged", clip_on=False,
                zorder=5)
        ax.annotate("diverged", xy=(x, y), xytext=(6, -4), textcoords="offset points",
                    color=color, fontsize=9, fontweight="bold", annotation_clip=False)
    ax.set_xlabel("epoch")
    ax.set_ylabel(METRIC_NAMES.get(metric, metric) + (" (log scale)" if log else ""))
    ax.grid(True, which="major", alpha=0.3)
    if log:
        ax.grid(True, which="minor", alpha=0.1)
    if title:
        ax.set_title(title, parse_math=False)
    if not drawn:
        ax.text(0.5, 0.5, f"no {METRIC_NAMES.get(metric, metric)} recorded yet",
                transform=ax.transAxes, ha="center", va="center", color="#666666")
        ax.set_xticks([])
        ax.set_yticks([])
    elif len(drawn) > 1 or drawn[0].label:
        many = len(drawn) > 8
        legend = ax.legend(fontsize=8 if many else 9, ncol=2 if len(drawn) > 24 else 1,
                           loc="upper left" if many else "best",
                           bbox_to_anchor=(1.01, 1.0) if many else None, frameon=not many)
        for text in legend.get_texts():
            text.set_parse_math(False)
    return fig


def figure_bytes(fig, fmt: str) -> bytes:
    """A Figure saved as ``fmt`` (png or svg), without a creation date (same input, same
    bytes)."""
    out = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    fig.savefig(out, format=fmt, metadata=metadata)
    return out.getvalue()


def error_curves_png(curves: list[Curve], *, log: bool = False, metric: str = "error",
                     title: str | None = None) -> bytes:
    """PNG of ``error_curves_figure``."""
    return figure_bytes(error_curves_figure(curves, log=log, metric=metric, title=title), "png")


# --------------------------------------------------------------------------- the network


def shown_units(size: int, max_nodes: int = MAX_NODES) -> tuple[list[int], int]:
    """(unit indices drawn, how many are elided) of a layer of ``size`` units: all of them
    up to ``max_nodes``; else the first and last ones around one "⋮" slot."""
    if size <= max_nodes:
        return list(range(size)), 0
    head = (max_nodes - 1) // 2
    tail = max_nodes - 1 - head
    return list(range(head)) + list(range(size - tail, size)), size - head - tail


def layer_titles(n_layers: int) -> list[tuple[str, str, str]]:
    """(id, heading, unit symbol) of each layer, inputs first, in the tutorial's notation:
    X, h_i → h_o, y_i → ŷ for one hidden layer; h⁽ᵏ⁾ᵢ → h⁽ᵏ⁾ₒ per hidden layer otherwise."""
    titles = [("X", r"$X$", "x")]
    for k in range(1, n_layers):
        if n_layers == 2:
            titles.append(("h_i-h_o", r"$h_i \rightarrow h_o$", "h"))
        else:
            titles.append((f"h{k}_i-h{k}_o", rf"$h^{{({k})}}_i \rightarrow h^{{({k})}}_o$",
                           f"h^{{({k})}}"))
    titles.append(("y_i-yhat", r"$y_i \rightarrow \hat{y}$", r"\hat{y}"))
    return titles


def layer_activations(spec: dict) -> list[str]:
    """One activation name per layer of weights of a run spec: the hidden ones, then the
    output's (sigmoid when the spec names none)."""
    hidden = spec["activation"]
    n_hidden = len(spec["layers"]) - 2
    names = list(hidden) if isinstance(hidden, list) else [hidden] * n_hidden
    return names + [spec.get("output_activation") or "sigmoid"]


def network_figure(params: dict, *, activations: list[str] | None = None,
                   title: str | None = None, max_nodes: int = MAX_NODES):
    """The matplotlib Figure of the network ``params`` ({"weights": [W1, ...], "biases":
    [...]}, W of shape (n_out, n_in)): units per layer with the tutorial's labels, each
    edge coloured by its weight's sign and as wide as its size, units tinted by their bias,
    layers wider than ``max_nodes`` elided. ``activations``: one name per layer of weights,
    shown under each layer."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle

    weights = [np.asarray(W, dtype=np.float64) for W in params["weights"]]
    biases = [np.asarray(B, dtype=np.float64) for B in params["biases"]]
    sizes = [weights[0].shape[1]] + [W.shape[0] for W in weights]
    n_layers = len(weights)
    shown = [shown_units(size, max_nodes) for size in sizes]
    slots = [len(units) + (1 if elided else 0) for units, elided in shown]
    tallest = max(slots)
    dx, radius = 3.0, 0.3

    def y_of(layer: int, slot: int) -> float:
        return (slots[layer] - 1) / 2.0 - slot

    positions = []  # per layer: {unit: (x, y)}, and the elided slot's y (or None)
    for layer, (units, elided) in enumerate(shown):
        head = (max_nodes - 1) // 2 if elided else len(units)
        where, slot = {}, 0
        gap = None
        for k, unit in enumerate(units):
            if elided and k == head:
                gap = y_of(layer, slot)
                slot += 1
            where[unit] = (layer * dx, y_of(layer, slot))
            slot += 1
        positions.append((where, gap))

    finite = [np.abs(W[np.isfinite(W)]) for W in weights]
    wmax = max((float(a.max()) for a in finite if a.size), default=0.0) or 1.0
    bfinite = [np.abs(B[np.isfinite(B)]) for B in biases]
    bmax = max((float(a.max()) for a in bfinite if a.size), default=0.0) or 1.0

    width = 1.2 + 2.0 * (n_layers + 1)
    height = 2.0 + 0.62 * tallest
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_aspect("equal")
    ax.axis("off")

    for l, W in enumerate(weights):
        src, dst = positions[l][0], positions[l + 1][0]
        for o, (x1, y1) in dst.items():
            for i, (x0, y0) in src.items():
                w = float(W[o, i])
                if not math.isfinite(w):
                    color, size = ZERO, 1.0
                else:
                    color = POSITIVE if w > 0 else NEGATIVE if w < 0 else ZERO
                    size = abs(w) / wmax
                ax.add_line(Line2D([x0, x1], [y0, y1], color=color,
                                   linewidth=0.3 + 3.7 * size, alpha=0.25 + 0.7 * size,
                                   solid_capstyle="round", zorder=1,
                                   gid=f"edge-W{l + 1}-{o + 1}-{i + 1}"))

    titles = layer_titles(n_layers)
    top = (tallest - 1) / 2.0
    for layer, ((where, gap), (key, heading, symbol)) in enumerate(zip(positions, titles)):
        x = layer * dx
        for unit, (ux, uy) in where.items():
            face = "#ffffff"
            if layer > 0:
                b = float(biases[layer - 1][unit])
                tint = min(abs(b) / bmax, 1.0) if math.isfinite(b) else 0.0
                base = (0.12, 0.37, 0.75) if b > 0 else (0.84, 0.15, 0.16)
                face = tuple(1 - 0.35 * tint * (1 - c) for c in base)
            ax.add_patch(Circle((ux, uy), radius, facecolor=face, edgecolor="#333333",
                                linewidth=1.2, zorder=3, gid=f"unit-{key}-{unit + 1}"))
            ax.text(ux, uy, rf"${symbol}_{{{unit + 1}}}$", ha="center", va="center",
                    fontsize=10 if unit < 99 else 8, zorder=4, gid=f"unit-label-{key}-{unit + 1}")
        if gap is not None:
            more = sizes[layer] - len(where)
            ax.text(x, gap, f"⋮ {more} more", ha="center", va="center", fontsize=9,
                    color="#444444", zorder=4, gid=f"elided-{key}-{more}",
                    bbox=dict(boxstyle="round,pad=0.25", facecolor="#f4f4f4",
                              edgecolor="#bbbbbb"))
        ax.text(x, top + (1.45 if activations else 1.1), heading, ha="center", va="bottom",
                fontsize=13, gid=f"layer-{key}")
        note = f"{sizes[layer]} unit{'s' if sizes[layer] != 1 else ''}"
        if activations:
            note += f"\n{activations[layer - 1]}" if layer > 0 else "\ninputs"
        ax.text(x, top + 0.65, note, ha="center", va="bottom", fontsize=8, color="#555555",
                linespacing=1.1)
    bottom = -(tallest - 1) / 2.0
    for l in range(n_layers):
        ax.text((l + 0.5) * dx, bottom - 0.9, rf"$W^{{{l + 1}}},\ B^{{{l + 1}}}$",
                ha="center", va="top", fontsize=11, color="#333333", gid=f"weights-W{l + 1}")
    ax.legend(handles=[Line2D([], [], color=POSITIVE, linewidth=2.5, label="w > 0"),
                       Line2D([], [], color=NEGATIVE, linewidth=2.5, label="w < 0")],
              loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, frameon=False,
              fontsize=8, title=f"line width ∝ |w| (largest {wmax:.3g})",
              title_fontsize=8)
    ax.set_xlim(-1.0, n_layers * dx + 1.0)
    ax.set_ylim(bottom - 1.6, top + 2.3)
    if title:
        ax.set_title(title, fontsize=11, parse_math=False)
    return fig


def network_svg(params: dict, *, activations: list[str] | None = None,
                title: str | None = None, max_nodes: int = MAX_NODES) -> bytes:
    """SVG of ``network_figure``."""
    fig = network_figure(params, activations=activations, title=title, max_nodes=max_nodes)
    svg = figure_bytes(fig, "svg").decode()
    # Text is drawn as glyph outlines; a <title> and <desc> keep it readable for screen
    # readers and search.
    sizes = [np.shape(params["weights"][0])[1]] + [np.shape(W)[0] for W in params["weights"]]
    parts = []
    for (key, _, _), size in zip(layer_titles(len(sizes) - 1), sizes):
        parts.append(f"{key.replace('-', ' → ').replace('yhat', 'ŷ')} ({size} units)")
    desc = " ⇒ ".join(parts)
    start = svg.index(">", svg.index("<svg")) + 1
    head = f"<title>{_escape(title or 'network')}</title><desc>{_escape(desc)}</desc>"
    return (svg[:start] + head + svg[start:]).encode()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

"""Small PNG plots for asset metadata, and tidy metadata values.

The Dagster UI shows a `MetadataValue.md` value as markdown, and markdown images may be data
URIs, so a plot travels inside the materialization itself (`![loss](data:image/png;base64,...)`):
no file server, no artifact to keep. The plots are small (480x240 px by default, a few KB to a
few tens of KB) so that the event log stays light.

matplotlib draws on its Agg canvas directly (no pyplot): no GUI backend, no global figure state,
safe in threads and in worker processes. It is imported when a plot is drawn, not before.

Nothing here imports Dagster; `tidy_metadata` only rounds and drops values of a plain dict.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Iterable, Sequence

WIDTH, HEIGHT, DPI = 480, 240, 100
MAX_PNG_BYTES = 200_000  # a plot that comes out larger is drawn again smaller


def round_sig(x: float, digits: int = 4) -> float | None:
    """`x` to `digits` significant digits; None for None, NaN and infinities."""
    if x is None or not math.isfinite(x):
        return None
    if x == 0:
        return 0.0
    return round(float(x), digits - 1 - int(math.floor(math.log10(abs(x)))))


def tidy_metadata(metadata: dict, digits: int = 4) -> dict:
    """Metadata as people read it: floats to `digits` significant digits, and no entry for a value
    that is absent (None, NaN or infinite: the UI would show "null" or "NaN"). Other values
    (ints, strings, bools, MetadataValue objects) pass unchanged."""
    out = {}
    for key, value in metadata.items():
        if isinstance(value, float):
            value = round_sig(value, digits)
        if value is not None:
            out[key] = value
    return out


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown that shows `png` inline: an image whose source is a base64 data URI."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def sparkline(values: Sequence[float], width: int = 240, height: int = 40, max_points: int = 48,
              alt: str = "sparkline") -> str | None:
    """A tiny inline chart as markdown: an SVG polyline (no text) in a base64 data URI, under
    1,000 characters. The Dagster UI shows markdown metadata inline only when it is that short
    (longer markdown, such as a PNG plot, sits behind a "[Show Markdown]" button), so this is
    the at-a-glance shape of a curve next to the full plot. None when there is nothing finite
    to draw. Non-finite values are left out; long series are thinned to `max_points`."""
    ys = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not ys:
        return None
    if len(ys) > max_points:  # evenly thinned, keeping the first and the last
        ys = [ys[round(i * (len(ys) - 1) / (max_points - 1))] for i in range(max_points)]
    low, high = min(ys), max(ys)
    span = (high - low) or 1.0
    pad = 3
    step = (width - 2 * pad) / max(1, len(ys) - 1)
    points = " ".join(f"{round(pad + i * step)},{round(pad + (high - y) / span * (height - 2 * pad))}"
                      for i, y in enumerate(ys))
    if len(ys) == 1:
        points += f" {width - pad},{points.split(',')[1]}"
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
           f'<polyline points="{points}" fill="none" stroke="#1f77b4" stroke-width="2"/></svg>')
    return f"![{alt}](data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode('ascii')})"


def _finite_points(xs: Iterable[float], ys: Iterable[float]) -> tuple[list[float], list[float], int]:
    px, py, dropped = [], [], 0
    for x, y in zip(xs, ys):
        if x is None or y is None or not (math.isfinite(x) and math.isfinite(y)):
            dropped += 1
            continue
        px.append(float(x))
        py.append(float(y))
    return px, py, dropped


def _figure(width: int, height: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8)
    ax.grid(True, alpha=0.3, linewidth=0.5)
    return fig, ax


def _png(fig, width: int, height: int) -> bytes:
    fig.set_size_inches(width / DPI, height / DPI)
    fig.tight_layout(pad=0.4)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def loss_curve_png(epoch_losses: Sequence[float], steps: Sequence[tuple[float, float]] = (),
                   width: int = WIDTH, height: int = HEIGHT, title: str = "training loss") -> bytes:
    """The loss per epoch (dots, at x = epoch) and, when given, per step as (fractional epoch, loss)
    points (a thin line: e.g. the mean loss of the steps between two progress reports, at
    epoch - 1 + step/steps). Non-finite values are left out and counted in the title."""
    fig, ax = _figure(width, height)
    ex, ey, dropped = _finite_points(range(1, len(epoch_losses) + 1), epoch_losses)
    sx, sy, dropped_steps = _finite_points([s[0] for s in steps], [s[1] for s in steps])
    dropped += dropped_steps
    if sx:
        ax.plot(sx, sy, color="tab:blue", alpha=0.45, linewidth=1, label="per step")
    if ex:
        ax.plot(ex, ey, color="tab:blue", marker="o", markersize=4, linewidth=1.5, label="per epoch")
    if not (ex or sx):
        _no_data(ax, "no finite loss to plot")
    else:
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        top = max(ey + sy)
        low = min(ey + sy)
        if low > 0 and top / low > 20:  # a curve that falls by orders of magnitude
            ax.set_yscale("log")
        if ex and len(ex) <= 20:
            ax.set_xticks(ex)
        if sx and ex:
            ax.legend(fontsize=7, frameon=False)
    last = f", last {round_sig(ey[-1])}" if ey else ""
    ax.set_title(title + last + (f" ({dropped} non-finite left out)" if dropped else ""), fontsize=9)
    return _bounded(fig, width, height)


def histogram(scores: Sequence[float], weights: Sequence[float] | None = None, bins: int = 20
              ) -> tuple[list[float], list[float]]:
    """Bin edges over [0, 1] and the weight of the finite scores in each bin (the last bin holds 1.0)."""
    import numpy as np

    s = np.asarray(list(scores), dtype=np.float64)
    w = np.ones_like(s) if weights is None else np.asarray(list(weights), dtype=np.float64)
    ok = np.isfinite(s) & np.isfinite(w)
    # edges as exact decimals (0.7, not 0.7000000000000001), so a score equal to a threshold on an
    # edge lands in the bin above it, as it does in the verdict (an anomaly scores below it)
    edges = [round(i / bins, 12) for i in range(bins + 1)]
    counts, _ = np.histogram(np.clip(s[ok], 0.0, 1.0), bins=np.asarray(edges), weights=w[ok])
    return edges, counts.tolist()


def score_histogram_png(edges: Sequence[float], counts: Sequence[float], threshold: float | None = None,
                        width: int = WIDTH, height: int = HEIGHT, title: str = "validation line scores") -> bytes:
    """Bars of `counts` over the bins `edges` (len(counts) + 1 edges), with the anomaly threshold
    as a dashed line and the share below it in the title. A log scale when the bars span more
    than two orders of magnitude (scores pile up near 1; the tail is what matters)."""
    fig, ax = _figure(width, height)
    pairs = [(lo, hi, c) for lo, hi, c in zip(edges[:-1], edges[1:], counts)
             if all(v is not None and math.isfinite(v) for v in (lo, hi, c))]
    total = sum(c for _, _, c in pairs)
    if not pairs or total <= 0:
        _no_data(ax, "no scores to plot")
        ax.set_title(title, fontsize=9)
        return _bounded(fig, width, height)
    ax.bar([lo for lo, _, _ in pairs], [c for _, _, c in pairs], width=[hi - lo for lo, hi, _ in pairs],
           align="edge", color="tab:blue", alpha=0.8, edgecolor="white", linewidth=0.5)
    positive = [c for _, _, c in pairs if c > 0]
    if positive and max(positive) / min(positive) > 100:
        ax.set_yscale("log")
    ax.set_xlabel("score (share of tokens in the model's top k)", fontsize=8)
    ax.set_ylabel("lines", fontsize=8)
    ax.set_xlim(min(lo for lo, _, _ in pairs), max(hi for _, hi, _ in pairs))
    if threshold is not None and math.isfinite(threshold):
        ax.axvline(threshold, color="tab:red", linestyle="--", linewidth=1)
        below = sum(c * _share_below(lo, hi, threshold) for lo, hi, c in pairs)
        title += f"; {below / total:.1%} below the threshold {round_sig(threshold)}"
    ax.set_title(title, fontsize=9)
    return _bounded(fig, width, height)


def _share_below(lo: float, hi: float, threshold: float) -> float:
    """How much of bin [lo, hi) lies below the threshold (assuming scores spread evenly in it)."""
    if hi <= threshold:
        return 1.0
    if lo >= threshold or hi <= lo:
        return 0.0
    return (threshold - lo) / (hi - lo)


def _bounded(fig, width: int, height: int) -> bytes:
    """The figure as PNG, drawn again smaller until it fits MAX_PNG_BYTES."""
    png = _png(fig, width, height)
    while len(png) > MAX_PNG_BYTES and width > 160:
        width, height = int(width * 0.7), int(height * 0.7)
        png = _png(fig, width, height)
    return png

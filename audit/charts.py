"""Small server-side SVG charts for the dashboard: no JavaScript, no image files, no matplotlib
import in the web process. Each chart has a <title> and an aria-label; the numbers are in the
tables beside them too."""

from __future__ import annotations

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

ACCENT = "#1f5fa8"
TRACK = "#e8ebf0"
TEXT = "#1d2330"
MUTED = "#5d6778"
FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def _svg(width: int, height: int, title: str, body: list[str]) -> SafeString:
    title = escape(title)
    return mark_safe(  # noqa: S308 - every text piece is escaped above or below
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{title}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}"><title>{title}</title>'
        + "".join(body)
        + "</svg>"
    )


def bar_chart(rows: list[tuple[str, float, str]], *, title: str, max_value: float | None = None) -> SafeString:
    """Horizontal bars: (label, value, value as text) per row; bars scale to max_value (or the
    largest value)."""
    label_w, bar_w, text_w, row_h = 130, 240, 90, 24
    top = max((value for _, value, _ in rows), default=0.0)
    scale = max_value if max_value else (top or 1.0)
    body = []
    for n, (label, value, text) in enumerate(rows):
        y = n * row_h
        width = 0.0 if scale <= 0 else min(max(value / scale, 0.0), 1.0) * bar_w
        body.append(
            f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end" fill="{TEXT}" {FONT}>{escape(label)}</text>'
            f'<rect x="{label_w}" y="{y + 5}" width="{bar_w}" height="14" rx="3" fill="{TRACK}"/>'
            f'<rect x="{label_w}" y="{y + 5}" width="{width:.1f}" height="14" rx="3" fill="{ACCENT}"/>'
            f'<text x="{label_w + bar_w + 8}" y="{y + 16}" fill="{MUTED}" {FONT}>{escape(text)}</text>'
        )
    return _svg(label_w + bar_w + text_w, max(len(rows), 1) * row_h + 4, title, body)


def confusion_matrix(
    *, rows: list[str], columns: list[str], counts: list[list[int]], title: str, row_axis: str, column_axis: str
) -> SafeString:
    """A count matrix; each cell shaded by its share of its row (rows are the reference)."""
    label_w, head_h, cell_w, cell_h = 120, 44, 86, 34
    body = [
        f'<text x="{label_w + cell_w * len(columns) / 2:.0f}" y="12" text-anchor="middle" fill="{MUTED}" '
        f"{FONT}>{escape(column_axis)}</text>",
        f'<text x="4" y="{head_h - 6}" fill="{MUTED}" {FONT}>{escape(row_axis)}</text>',
    ]
    for c, name in enumerate(columns):
        x = label_w + c * cell_w + cell_w / 2
        body.append(
            f'<text x="{x:.0f}" y="{head_h - 8}" text-anchor="middle" fill="{TEXT}" {FONT}>{escape(name)}</text>'
        )
    for r, name in enumerate(rows):
        y = head_h + r * cell_h
        total = sum(counts[r]) or 1
        body.append(
            f'<text x="{label_w - 8}" y="{y + cell_h / 2 + 4:.0f}" text-anchor="end" fill="{TEXT}" {FONT}>'
            f"{escape(name)}</text>"
        )
        for c, count in enumerate(counts[r]):
            share = count / total
            x = label_w + c * cell_w
            ink = "#ffffff" if share > 0.55 else TEXT
            body.append(
                f'<rect x="{x + 1}" y="{y + 1}" width="{cell_w - 2}" height="{cell_h - 2}" rx="3" fill="{ACCENT}" '
                f'fill-opacity="{0.08 + 0.92 * share:.2f}"/>'
                f'<text x="{x + cell_w / 2:.0f}" y="{y + cell_h / 2 + 4:.0f}" text-anchor="middle" fill="{ink}" '
                f'{FONT} font-weight="600">{count}</text>'
            )
    return _svg(label_w + cell_w * max(len(columns), 1) + 4, head_h + cell_h * max(len(rows), 1) + 4, title, body)


def reliability_diagram(bins: list, *, title: str) -> SafeString:
    """Calibration: per bin of top-class probability, the share correct (bar) against the mean
    probability (dot), with the diagonal a calibrated model follows. `bins`: objects with lower,
    upper, n, mean_confidence, accuracy (modelops.metrics.CalibrationBin). Empty bins are blank."""
    left, top, size, bottom = 44, 12, 220, 40
    body = [
        f'<rect x="{left}" y="{top}" width="{size}" height="{size}" fill="none" stroke="{TRACK}"/>',
        f'<line x1="{left}" y1="{top + size}" x2="{left + size}" y2="{top}" stroke="{MUTED}" stroke-dasharray="4 3"/>',
    ]
    for tick in (0, 0.5, 1):
        y = top + size * (1 - tick)
        x = left + size * tick
        body.append(f'<text x="{left - 6}" y="{y + 4:.0f}" text-anchor="end" fill="{MUTED}" {FONT}>{tick:.0%}</text>')
        body.append(
            f'<text x="{x:.0f}" y="{top + size + 16}" text-anchor="middle" fill="{MUTED}" {FONT}>{tick:.0%}</text>'
        )
    body.append(
        f'<text x="{left + size / 2:.0f}" y="{top + size + 34}" text-anchor="middle" fill="{TEXT}" {FONT}>'
        "Top-class probability</text>"
    )
    for b in bins:
        if not b.n:
            continue
        x = left + size * b.lower
        width = size * (b.upper - b.lower)
        height = size * b.accuracy
        body.append(
            f'<rect x="{x + 1:.1f}" y="{top + size - height:.1f}" width="{width - 2:.1f}" height="{height:.1f}" '
            f'fill="{ACCENT}" fill-opacity="0.35"><title>{b.lower:.0%}-{b.upper:.0%}: {b.accuracy:.0%} correct '
            f"of {b.n}</title></rect>"
            f'<circle cx="{left + size * b.mean_confidence:.1f}" cy="{top + size * (1 - b.accuracy):.1f}" r="3.5" '
            f'fill="{ACCENT}"/>'
        )
    return _svg(left + size + 12, top + size + bottom + 4, title, body)


def column_chart(
    columns: list[tuple[str, float, str]], *, title: str, band: tuple[float, float] | None = None, percent: bool = False
) -> SafeString:
    """Vertical bars over time (label under each, value text in its tooltip); an optional shaded
    band (low, high) in the same units, e.g. what the model's test split expects."""
    left, top, height, col_w, bottom = 40, 10, 120, 34, 34
    peak = max([value for _, value, _ in columns] + [band[1] if band else 0.0, 1e-9])
    width = left + col_w * max(len(columns), 1) + 8
    body = [f'<line x1="{left}" y1="{top + height}" x2="{width - 4}" y2="{top + height}" stroke="{TRACK}"/>']
    if band is not None:
        y_high = top + height * (1 - min(band[1] / peak, 1.0))
        y_low = top + height * (1 - min(band[0] / peak, 1.0))
        body.append(
            f'<rect x="{left}" y="{y_high:.1f}" width="{width - left - 4}" height="{max(y_low - y_high, 1):.1f}" '
            f'fill="#2e7d32" fill-opacity="0.12"/>'
        )
    peak_text = f"{peak:.0%}" if percent else f"{peak:.0f}"
    body.append(f'<text x="{left - 6}" y="{top + 8}" text-anchor="end" fill="{MUTED}" {FONT}>{peak_text}</text>')
    for n, (label, value, text) in enumerate(columns):
        x = left + n * col_w
        h = height * value / peak
        body.append(
            f'<rect x="{x + 4}" y="{top + height - h:.1f}" width="{col_w - 8}" height="{h:.1f}" rx="2" fill="{ACCENT}">'
            f"<title>{escape(label)}: {escape(text)}</title></rect>"
            f'<text x="{x + col_w / 2:.0f}" y="{top + height + 14}" text-anchor="middle" fill="{MUTED}" '
            f'font-family="system-ui, sans-serif" font-size="10">{escape(label)}</text>'
        )
    return _svg(width, top + height + bottom, title, body)

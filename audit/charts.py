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

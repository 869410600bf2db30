"""The dashboard's charts, drawn on the server as SVG: no script, no CDN, nothing to load.

Each function returns markup ready for a template: an ``<svg role="img">`` whose ``<title>``
and ``<desc>`` say what it shows, followed by the same figures as a table that only screen
readers announce (``.visually-hidden``). Sizes are in SVG units; the SVG scales to its card.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

WIDTH = 600
HEIGHT = 160
PAD_LEFT = 44  # room for the y-axis figures
PAD_BOTTOM = 18  # room for the x-axis labels
PAD_TOP = 8


def _n(value: float) -> str:
    """A coordinate as SVG text (format_html's arguments are strings by the time it formats)."""
    return f"{value:.1f}"


def level(share: float) -> str:
    """``ok`` below 75% of a limit, ``warn`` below 90%, ``bad`` from 90%: the CSS class."""
    if share >= 0.9:
        return "bad"
    if share >= 0.75:
        return "warn"
    return "ok"


@dataclass(frozen=True)
class Gauge:
    """Today's calls against the day's quota, with the interactive reserve marked."""

    used: int
    quota: int
    #: Calls after which background jobs stop for the day (the rest is kept for people): the
    #: quota service's figure, ``KeyQuota.background_per_day``.
    background_cap: int

    @property
    def share(self) -> float:
        return self.used / self.quota if self.quota else 0.0

    def svg(self, *, chart_id: str) -> SafeString:
        bar_width = WIDTH - 2
        filled = min(self.share, 1.0) * bar_width
        cap_x = 1 + bar_width * (self.background_cap / self.quota if self.quota else 1.0)
        title = f"Calls today: {self.used:,} of {self.quota:,}"
        desc = (
            f"{self.share:.0%} of today's quota used. Background jobs stop at "
            f"{self.background_cap:,} calls; the last {self.quota - self.background_cap:,} are "
            "kept for people."
        )
        return format_html(
            '<svg class="chart gauge" viewBox="0 0 {w} 36" role="img" '
            'aria-labelledby="{id}-t {id}-d" preserveAspectRatio="none">'
            '<title id="{id}-t">{title}</title><desc id="{id}-d">{desc}</desc>'
            '<rect class="track" x="1" y="6" width="{bw}" height="20" rx="4"/>'
            '<rect class="fill {level}" x="1" y="6" width="{filled}" height="20" rx="4"/>'
            '<line class="reserve" x1="{cap}" x2="{cap}" y1="1" y2="31"/>'
            "</svg>",
            w=WIDTH,
            id=chart_id,
            title=title,
            desc=desc,
            bw=bar_width,
            level=level(self.share),
            filled=_n(filled),
            cap=_n(cap_x),
        )


def _bars(
    values: Sequence[int],
    *,
    limit: int,
    chart_id: str,
    title: str,
    desc: str,
    labels: Sequence[tuple[int, str]],
) -> SafeString:
    """Bars for ``values`` on a scale that always shows ``limit`` (a dashed line)."""
    top = max([limit, *values, 1])
    plot_w = WIDTH - PAD_LEFT - 4
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    step = plot_w / max(len(values), 1)
    gap = min(2.0, step * 0.2)

    def y(value: float) -> float:
        return PAD_TOP + plot_h * (1 - value / top)

    bars = format_html_join(
        "",
        '<rect class="bar {}" x="{}" y="{}" width="{}" height="{}"/>',
        (
            (
                level(value / limit) if limit else "ok",
                _n(PAD_LEFT + i * step + gap / 2),
                _n(y(value)),
                _n(max(step - gap, 0.5)),
                _n(PAD_TOP + plot_h - y(value)),
            )
            for i, value in enumerate(values)
        ),
    )

    def tick(i: int) -> tuple[str, str]:
        # The outermost labels hang inwards from their bar, so none is clipped at an edge.
        if i == 0:
            return _n(PAD_LEFT + i * step), "start"
        if i == len(values) - 1:
            return _n(PAD_LEFT + (i + 1) * step), "end"
        return _n(PAD_LEFT + (i + 0.5) * step), "middle"

    ticks = format_html_join(
        "",
        '<text class="x-label" x="{}" y="{}" text-anchor="{}">{}</text>',
        ((x, HEIGHT - 4, anchor, text) for i, text in labels for x, anchor in [tick(i)]),
    )
    return format_html(
        '<svg class="chart bars" viewBox="0 0 {w} {h}" role="img" '
        'aria-labelledby="{id}-t {id}-d">'
        '<title id="{id}-t">{title}</title><desc id="{id}-d">{desc}</desc>'
        '<line class="axis" x1="{left}" x2="{right}" y1="{base}" y2="{base}"/>'
        '<text class="y-label" x="{lx}" y="{top_y}" text-anchor="end">{top}</text>'
        '<text class="y-label" x="{lx}" y="{base}" text-anchor="end">0</text>'
        "{bars}"
        '<line class="limit" x1="{left}" x2="{right}" y1="{limit_y}" y2="{limit_y}"/>'
        '<text class="limit-label" x="{right}" y="{limit_label_y}" text-anchor="end">'
        "limit {limit}</text>"
        "{ticks}</svg>",
        w=WIDTH,
        h=HEIGHT,
        id=chart_id,
        title=title,
        desc=desc,
        left=PAD_LEFT,
        right=WIDTH - 4,
        base=_n(PAD_TOP + plot_h),
        lx=PAD_LEFT - 6,
        top_y=PAD_TOP + 8,
        top=f"{top:,}",
        bars=bars,
        limit_y=_n(y(limit)),
        limit_label_y=_n(max(y(limit) - 3, PAD_TOP + 8)),
        limit=f"{limit:,}",
        ticks=ticks,
    )


def _tick_positions(count: int, *, every: int) -> list[int]:
    """Every ``every``-th position and the last, without a label crowding the last one."""
    if count == 0:
        return []
    last = count - 1
    return [i for i in range(0, last, every) if last - i >= every / 2] + [last]


def _table(caption: str, header: tuple[str, str], rows: Sequence[tuple[str, int]]) -> SafeString:
    body = format_html_join(
        "", "<tr><th scope=row>{}</th><td>{}</td></tr>", ((label, f"{n:,}") for label, n in rows)
    )
    return format_html(
        '<table class="visually-hidden"><caption>{}</caption>'
        "<thead><tr><th scope=col>{}</th><th scope=col>{}</th></tr></thead>"
        "<tbody>{}</tbody></table>",
        caption,
        header[0],
        header[1],
        body,
    )


def calls_per_minute(
    series: Sequence[tuple[dt.datetime, int]], *, per_second: int, chart_id: str
) -> SafeString:
    """The last hour, a bar per minute, against what the per-second limit allows a minute."""
    limit = per_second * 60
    values = [n for _, n in series]
    busiest = max(values, default=0)
    labels = [(i, f"{series[i][0]:%H:%M}") for i in _tick_positions(len(series), every=15)]
    svg = _bars(
        values,
        limit=limit,
        chart_id=chart_id,
        title="Calls per minute, last hour (UTC)",
        desc=f"{sum(values):,} calls in the last hour; the busiest minute had {busiest:,} of "
        f"the {limit:,} a minute that {per_second}/s allows.",
        labels=labels,
    )
    table = _table(
        "Calls per minute, last hour (UTC)",
        ("Minute", "Calls"),
        [(f"{minute:%H:%M}", n) for minute, n in series if n],
    )
    return mark_safe(svg + table)  # noqa: S308  (both parts are built by format_html)


def calls_per_day(
    series: Sequence[tuple[dt.date, int]], *, per_day: int, chart_id: str
) -> SafeString:
    """The last 30 UTC days, a bar per day, against the daily quota."""
    values = [n for _, n in series]
    over = sum(1 for n in values if n >= per_day)
    labels = [(i, f"{series[i][0]:%b %-d}") for i in _tick_positions(len(series), every=7)]
    svg = _bars(
        values,
        limit=per_day,
        chart_id=chart_id,
        title=f"Calls per day, last {len(series)} days (UTC)",
        desc=f"{sum(values):,} calls in {len(series)} days, busiest day {max(values, default=0):,} "
        f"of the {per_day:,} quota; {over} day(s) reached the quota.",
        labels=labels,
    )
    table = _table(
        f"Calls per day, last {len(series)} days (UTC)",
        ("Day", "Calls"),
        [(f"{day:%Y-%m-%d}", n) for day, n in series],
    )
    return mark_safe(svg + table)  # noqa: S308  (both parts are built by format_html)

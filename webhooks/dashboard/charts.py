"""Charts as SVG written on the server: readable without JavaScript, nothing fetched.

Small on purpose: a balance line and paired daily bars are all the pages draw. Colours are
presentation attributes (the pages' Content-Security-Policy allows no inline styles), every
chart is ``role="img"`` with a title and a text summary for screen readers, and the numbers
behind it are in a table next to it on the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta

from markupsafe import Markup, escape

from webhooks.dashboard.formatting import money
from worker.ledger.dashboard_views import BalancePoint, DayFlow

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 12, 12, 24, 28
INK = "#1f2933"
GRID = "#c7ced6"
LINE = "#1d4ed8"
CREDIT = "#15803d"
DEBIT = "#b45309"


def _frame(title: str, summary: str, body: list[str], chart_id: str) -> Markup:
    head = (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{chart_id}-t">{escape(title)}</title>'
        f'<desc id="{chart_id}-d">{escape(summary)}</desc>'
    )
    return Markup(head + "".join(body) + "</svg>")  # noqa: S704 (every value escaped above)


def _text(x: float, y: float, text: str, anchor: str = "start") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="13" fill="{INK}" '
        f'text-anchor="{anchor}">{escape(text)}</text>'
    )


def balance_line(points: Sequence[BalancePoint], currency: str, chart_id: str) -> Markup | None:
    """The wallet's balance after each entry, as a step line over time; None without entries."""
    if not points:
        return None
    top = max(p.balance for p in points) or 1
    start, end = points[0].at, points[-1].at
    span = (end - start).total_seconds() or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def xy(at: datetime, balance: int) -> tuple[float, float]:
        x = LEFT + plot_w * ((at - start).total_seconds() / span) if len(points) > 1 else LEFT
        return x, TOP + plot_h * (1 - balance / top)

    coords: list[str] = []
    previous_y: float | None = None
    for p in points:
        x, y = xy(p.at, p.balance)
        if previous_y is not None:
            coords.append(f"{x:.1f},{previous_y:.1f}")  # a balance holds until the next entry
        coords.append(f"{x:.1f},{y:.1f}")
        previous_y = y
    if len(points) == 1:
        coords.append(f"{LEFT + plot_w:.1f},{previous_y:.1f}")
    last = points[-1]
    summary = (
        f"{len(points)} entries from {start:%Y-%m-%d} to {end:%Y-%m-%d}; highest "
        f"{money(top, currency)}, now {money(last.balance, currency)}."
    )
    body = [
        f'<line x1="{LEFT}" y1="{TOP}" x2="{WIDTH - RIGHT}" y2="{TOP}" stroke="{GRID}"/>',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}" '
        f'stroke="{GRID}"/>',
        f'<polyline points="{" ".join(coords)}" fill="none" stroke="{LINE}" stroke-width="2"/>',
        _text(LEFT, TOP - 8, f"{money(top, currency)}"),
        _text(LEFT, HEIGHT - 8, f"{start:%Y-%m-%d}"),
        _text(WIDTH - RIGHT, HEIGHT - 8, f"{end:%Y-%m-%d %H:%M} UTC", "end"),
        _text(WIDTH - RIGHT, TOP - 8, f"now {money(last.balance, currency)}", "end"),
    ]
    return _frame(
        f"{currency} balance over its last {len(points)} entries", summary, body, chart_id
    )


def daily_bars(
    flows: Sequence[DayFlow],
    currency: str,
    chart_id: str,
    *,
    days: int = 30,
    today: date,
    show_credits: bool = True,
) -> Markup | None:
    """Credits (green) and debits (amber) per day over the last ``days`` days; None when no
    day had any."""
    by_day = {f.day: f for f in flows if f.currency == currency}
    if not by_day:
        return None
    first = today - timedelta(days=days - 1)
    top = max(max(f.credits if show_credits else 0, f.debits) for f in by_day.values()) or 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / days
    bar = max(1.0, slot * (0.4 if show_credits else 0.7))
    body = [
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}" '
        f'stroke="{GRID}"/>'
    ]
    total_credits = total_debits = 0
    for i in range(days):
        flow = by_day.get(first + timedelta(days=i))
        if flow is None:
            continue
        x = LEFT + i * slot + slot * 0.1
        series = (
            [(flow.credits, CREDIT), (flow.debits, DEBIT)]
            if show_credits
            else [(flow.debits, DEBIT)]
        )
        for amount, colour in series:
            height = plot_h * amount / top
            if amount:
                body.append(
                    f'<rect x="{x:.1f}" y="{TOP + plot_h - height:.1f}" width="{bar:.1f}" '
                    f'height="{max(height, 1):.1f}" fill="{colour}"/>'
                )
            x += bar
        total_credits += flow.credits
        total_debits += flow.debits
    body += [
        _text(LEFT, TOP - 8, f"{money(top, currency)} a day at most"),
        _text(LEFT, HEIGHT - 8, f"{first:%Y-%m-%d}"),
        _text(WIDTH - RIGHT, HEIGHT - 8, f"{today:%Y-%m-%d}", "end"),
    ]
    if show_credits:
        title = f"{currency} credits and debits per day, last {days} days"
        summary = (
            f"Credits {money(total_credits, currency)}, debits {money(total_debits, currency)} "
            f"over {len(by_day)} days with entries."
        )
        body.append(_text(WIDTH - RIGHT, TOP - 8, "credits (green) / debits (amber)", "end"))
    else:
        title = f"{currency} spending per day, last {days} days"
        summary = f"Spent {money(total_debits, currency)} over {len(by_day)} days."
    return _frame(title, summary, body, chart_id)

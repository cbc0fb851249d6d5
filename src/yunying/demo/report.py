"""The summary ``yunying demo`` prints for people: figures, keys, channels and where to look."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def channel_table(summary: dict[str, Any]) -> Table:
    """Users, sign-ups, payers, revenue and acquisition cost of each channel."""
    table = Table("channel", "users", "signed up", "paying", "revenue ¥", "CPI ¥", "spend ¥")
    for name, c in summary["channel_stats"].items():
        table.add_row(
            name,
            f"{c['users']:,}",
            f"{c['signed_up']:,}",
            f"{c['paying']:,}",
            f"{c['revenue_cny']:,.0f}",
            f"{c['cpi_cny']:.0f}",
            f"{c['spend_cny']:,.0f}",
        )
    return table


def print_summary(console: Console, s: dict[str, Any], data_dir: Path, url: str | None) -> None:
    """Print what was generated, the project's keys and how to serve or query it."""
    rate = s["events_per_second"] or 0
    console.print(
        f"[bold green]demo ready[/]: project {s['project']!r} (id {s['project_id']}) in {data_dir}"
    )
    console.print(
        f"  period      {s['first_day']} … {s['last_day']} ({s['days']} days, seed {s['seed']})"
    )
    console.print(
        f"  persons     {s['persons']:,} ({s['signed_up']:,} signed up, {s['paying']:,} paying)"
    )
    console.print(f"  events      {s['events']:,} in {s['seconds']:.1f} s ({rate:,} events/s)")
    console.print(
        f"  revenue     ¥{s['revenue_cny']:,.2f} (memberships); "
        f"acquisition spend ¥{s['spend_cny']:,.2f}"
    )
    console.print(f"  write key   {s['write_key']}  (public, for SDKs)")
    if s.get("secret_key"):
        console.print(
            f"  secret key  {s['secret_key']}  [yellow](shown only once: store it now)[/]"
        )
    else:
        console.print("  secret key  unchanged (it was shown when the project was created)")
    console.print(channel_table(s))
    if url is None:
        console.print(f"serve it:  yunying serve --data-dir {data_dir}")
    else:
        console.print(f"console and API: [bold]{url}[/]  (API docs {url}/docs), starting now")
    console.print(
        f'query it:  yunying sql --data-dir {data_dir} "SELECT event, count(*) FROM events '
        'GROUP BY 1 ORDER BY 2 DESC"'
    )

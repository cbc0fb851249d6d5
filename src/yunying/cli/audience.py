"""Audience reports: ``yunying lifecycle-stages``, ``rfm``, ``persona``, ``profile`` and
``audience-settings show|set``.

Each command asks the running server's ``/api/v1/audience`` endpoints when one serves the data
dir (DuckDB allows one process), else computes the same answer locally with the same functions
(:func:`~yunying.cli.remote.call_project_api`), so ``--json`` prints the API's answer either way.
"""

# no `from __future__ import annotations`: Typer reads the option types of the commands defined
# inside register(), which refer to names local to it.

from collections.abc import Callable
from datetime import date, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from yunying.runtime import Runtime
    from yunying.state import Project


class UsageError(Exception):
    """An option value the command cannot turn into a request."""


def parse_day(option: str, text: str | None) -> date | None:
    """``2026-11-01`` as a date (None stays None)."""
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option} must be a date like 2026-11-01, not {text!r}") from None


def parse_value(text: str) -> Any:
    """A ``set`` value: JSON when it parses (numbers, lists, null, true), else the text."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def parse_change(text: str) -> tuple[str, Any]:
    """``lifecycle.silent_days=10`` → ("lifecycle.silent_days", 10)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"settings changes look like lifecycle.silent_days=10, not {text!r}")
    return key.strip(), parse_value(value.strip())


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def _num(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def distribution_table(result: dict[str, Any]) -> Table:
    table = Table("stage", "阶段", "persons", "share", title=f"as of {result['as_of']}")
    for s in result["stages"]:
        table.add_row(s["stage"], s["name_zh"], _num(s["persons"]), _pct(s["share"]))
    table.add_row("total", "", _num(result["total"]), "", style="bold")
    return table


def over_time_table(result: dict[str, Any]) -> Table:
    stages = list(result["stages"])
    table = Table("period", "as of", *stages, "total")
    for i, label in enumerate(result["labels"]):
        table.add_row(
            label,
            result["as_of"][i],
            *[_num(result["stages"][s][i]) for s in stages],
            _num(result["totals"][i]),
        )
    return table


def transitions_table(result: dict[str, Any]) -> Table:
    table = Table("period", "from", "to", "persons")
    for p in result["periods"]:
        for t in p["transitions"]:
            if t["from"] != t["to"]:
                table.add_row(p["label"], t["from"], t["to"], _num(t["persons"]))
    return table


def rfm_table(result: dict[str, Any]) -> Table:
    table = Table(
        "class", "分类", "R", "F", "M", "persons", "share", "revenue", "revenue share",
        title=f"RFM as of {result['as_of']} ({result['scoring']}, high = {result['high']})",
    )  # fmt: skip
    for c in result["classes"]:
        hl = ["high" if c[k] else "low" for k in ("r_high", "f_high", "m_high")]
        table.add_row(
            c["class"], c["name_zh"], *hl, _num(c["persons"]), _pct(c["share"]),
            _num(c["revenue"]), _pct(c["revenue_share"]),
        )  # fmt: skip
    return table


def persona_tables(result: dict[str, Any]) -> list[Table]:
    g = result["group"]
    head = f"{g['kind']} {g['value'] or ''}".strip()
    tables = []
    for d in result["distributions"]:
        t = Table(escape(d["label"]), "group", "share", "population", "share", "lift")
        for v in d["values"]:
            t.add_row(
                "(not set)" if v["value"] is None else escape(str(v["value"])),
                _num(v["group"]), _pct(v["group_share"]), _num(v["population"]),
                _pct(v["population_share"]), "" if v["lift"] is None else f"{v['lift']:.2f}",
            )  # fmt: skip
        tables.append(t)
    ev = Table("event", "per person", "population", "lift", title=f"top events of {head}")
    for e in result["top_events"]:
        ev.add_row(
            escape(e["event"]), f"{e['group_rate'] or 0:.2f}", f"{e['population_rate'] or 0:.2f}",
            "" if e["lift"] is None else f"{e['lift']:.2f}",
        )  # fmt: skip
    tables.append(ev)
    rev = Table("", "persons", "payers", "paying rate", "ARPU", "ARPPU", "avg active days")
    for who in ("group", "population"):
        r = result["revenue"][who]
        rev.add_row(
            who, _num(r["persons"]), _num(r["payers"]), _pct(r["paying_rate"]),
            _num(r["arpu"]), _num(r["arppu"]), _num(result["active_days"][who]["average"]),
        )  # fmt: skip
    tables.append(rev)
    return tables


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``yunying`` app."""
    from yunying.cli.main import (
        DataDir,
        EventsURL,
        JSONOut,
        ProjectName,
        StateURL,
        console,
        fail,
        print_json,
        settings_of,
    )
    from yunying.cli.remote import call_project_api
    from yunying.errors import YunyingError

    AsOf = Annotated[
        str | None, typer.Option("--as-of", help="Local day, YYYY-MM-DD (default: today).")
    ]
    DateFrom = Annotated[str | None, typer.Option("--from", help="First local day, YYYY-MM-DD.")]
    DateTo = Annotated[
        str | None, typer.Option("--to", help="Last local day, YYYY-MM-DD (default: today).")
    ]

    def execute(
        make: Callable[[], Any],
        json_out: bool,
        show: Callable[[Any], None],
    ) -> Any:
        from yunying.web.http import HTTPProblem

        try:
            result = make()
        except UsageError as exc:
            fail(str(exc))
        except HTTPProblem as exc:
            fail(str(exc.body["error"]))
        except YunyingError as exc:
            fail(str(exc))
        if json_out:
            print_json(result)
        else:
            show(result)
        return result

    @app.command("lifecycle-stages", rich_help_panel="Audience")
    def lifecycle_stages(
        as_of: AsOf = None,
        over_time: Annotated[
            bool, typer.Option("--over-time", help="Persons per stage at each period's end.")
        ] = False,
        transitions: Annotated[
            bool, typer.Option("--transitions", help="Moves between stages per period.")
        ] = False,
        members: Annotated[
            str | None,
            typer.Option(
                help="List the persons of one transition FROM:TO (e.g. active:silent) in the "
                "period holding --as-of."
            ),
        ] = None,
        interval: Annotated[str, typer.Option(help="day, week or month.")] = "week",
        date_from: DateFrom = None,
        date_to: DateTo = None,
        limit: Annotated[int, typer.Option(help="Persons listed by --members.")] = 100,
        store: Annotated[
            bool,
            typer.Option("--store", help="Also write each person's stage (person_values 'stage')."),
        ] = False,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Lifecycle stages (新增/活跃/留存/沉默/流失/回流): now, over time, or transitions."""
        from yunying.audience import settings as aset
        from yunying.audience import stages as st
        from yunying.web.audience_api import default_range

        settings = settings_of(data_dir, events_url, state_url)

        def make() -> Any:
            day = parse_day("--as-of", as_of)
            first, last = parse_day("--from", date_from), parse_day("--to", date_to)
            if interval not in st.INTERVALS:
                raise UsageError(f"--interval must be day, week or month, not {interval!r}")
            params = {"date_from": date_from, "date_to": date_to, "interval": interval}
            if store:
                call_project_api(
                    settings, project, "POST", "/api/v1/audience/stages/store",
                    lambda rt, p: {"scope": "stage", "persons": st.store_stages(rt, p, day)},
                    params={"as_of": as_of},
                )  # fmt: skip
            if members is not None:
                frm, sep, to = members.partition(":")
                if not sep:
                    raise UsageError(
                        f"--members must be FROM:TO like active:silent, not {members!r}"
                    )

                def local_members(rt: "Runtime", p: "Project") -> Any:
                    period = st.period_of(day or st.local_today(p.timezone), interval)
                    return st.transition_members(
                        rt.store, p.id, aset.get_settings(rt.state, p.id), period, frm, to,
                        p.timezone, limit,
                    )  # fmt: skip

                query = {
                    "as_of": as_of,
                    "interval": interval,
                    "from": frm,
                    "to": to,
                    "limit": limit,
                }
                return call_project_api(
                    settings, project, "GET", "/api/v1/audience/stages/transitions/members",
                    local_members, params=query,
                )  # fmt: skip
            if transitions or over_time:
                kind = "transitions" if transitions else "over-time"

                def local_series(rt: "Runtime", p: "Project") -> Any:
                    rng = default_range(first, last, interval, p.timezone)
                    s = aset.get_settings(rt.state, p.id)
                    if transitions:
                        return st.stage_transitions(rt.store, p.id, s, rng, interval)
                    return st.stages_over_time(rt.store, p.id, s, rng, interval)

                return call_project_api(
                    settings, project, "GET", f"/api/v1/audience/stages/{kind}", local_series,
                    params=params,
                )  # fmt: skip

            def local_now(rt: "Runtime", p: "Project") -> Any:
                s = aset.get_settings(rt.state, p.id)
                return st.stage_distribution(
                    rt.store, p.id, s, day or st.local_today(p.timezone), p.timezone
                )

            return call_project_api(
                settings, project, "GET", "/api/v1/audience/stages", local_now,
                params={"as_of": as_of},
            )  # fmt: skip

        def show(result: Any) -> None:
            if "persons" in result and "from" in result:
                for pid in result["persons"]:
                    console.print(pid)
                console.print(f"{result['total']} persons went {result['from']} → {result['to']}")
            elif "periods" in result:
                console.print(transitions_table(result))
            elif "labels" in result:
                console.print(over_time_table(result))
            else:
                console.print(distribution_table(result))

        execute(make, json_out, show)

    @app.command("rfm", rich_help_panel="Audience")
    def rfm_command(
        as_of: AsOf = None,
        store: Annotated[
            bool,
            typer.Option("--store", help="Also write each person's class (person_values 'rfm')."),
        ] = False,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """RFM scores and the eight classes (重要价值客户 … 一般挽留客户) with revenue shares."""
        from yunying.audience import rfm as rf
        from yunying.audience import settings as aset
        from yunying.audience.stages import local_today

        settings = settings_of(data_dir, events_url, state_url)

        def make() -> Any:
            day = parse_day("--as-of", as_of)
            if store:
                call_project_api(
                    settings, project, "POST", "/api/v1/audience/rfm/store",
                    lambda rt, p: {"scope": "rfm", "persons": rf.store_rfm(rt, p, day)},
                    params={"as_of": as_of},
                )  # fmt: skip

            def local(rt: "Runtime", p: "Project") -> Any:
                s = aset.get_settings(rt.state, p.id)
                return rf.rfm_report(rt.store, p.id, s, day or local_today(p.timezone), p.timezone)

            return call_project_api(
                settings, project, "GET", "/api/v1/audience/rfm", local, params={"as_of": as_of}
            )

        execute(make, json_out, lambda r: console.print(rfm_table(r)))

    @app.command("persona", rich_help_panel="Audience")
    def persona_command(
        segment: Annotated[
            str | None, typer.Argument(help="Segment id (omit with --stage, --rfm or --everyone).")
        ] = None,
        stage: Annotated[
            str | None, typer.Option(help="A lifecycle stage (new, active...).")
        ] = None,
        rfm: Annotated[
            str | None, typer.Option("--rfm", help="An RFM class (important_value...).")
        ] = None,
        everyone: Annotated[bool, typer.Option("--everyone", help="All persons.")] = False,
        properties: Annotated[
            list[str] | None,
            typer.Option("--property", "-p", help="Person property to break down, repeatable."),
        ] = None,
        top_events: Annotated[int, typer.Option(help="Events listed.")] = 10,
        date_from: DateFrom = None,
        date_to: DateTo = None,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Persona (画像) of a segment, stage or RFM class next to everyone, with the lift."""
        from yunying.audience import settings as aset
        from yunying.web.audience_api import PersonaRequest, persona_field

        settings = settings_of(data_dir, events_url, state_url)

        def make() -> Any:
            chosen = [
                (k, v)
                for k, v in (("segment", segment), ("stage", stage), ("rfm", rfm))
                if v is not None
            ] + ([("everyone", None)] if everyone else [])
            if len(chosen) != 1:
                raise UsageError("name exactly one group: SEGMENT_ID, --stage, --rfm or --everyone")
            group, value = chosen[0]
            body = {
                "project": project,
                "group": group,
                "value": value,
                "date_from": parse_day("--from", date_from),
                "date_to": parse_day("--to", date_to),
                "properties": properties or [],
                "top_events": top_events,
            }
            json_body = {k: (v.isoformat() if isinstance(v, date) else v) for k, v in body.items()}

            def local(rt: "Runtime", p: "Project") -> Any:
                from pydantic import ValidationError

                from yunying.analytics.common import DateRange, InvalidQuery
                from yunying.audience.persona import PersonaQuery, persona
                from yunying.audience.stages import local_today
                from yunying.web.analytics_api import validation_problem

                try:
                    req = PersonaRequest.model_validate(json_body)
                except ValidationError as exc:
                    raise validation_problem(list(exc.errors()), body_prefix=False) from None
                last = req.date_to or local_today(p.timezone)
                first = req.date_from or last - timedelta(days=29)
                try:
                    q = PersonaQuery(
                        req.group, DateRange(first, last, p.timezone), req.value,
                        tuple(req.properties), req.top_events, req.values_limit,
                        tuple(req.dimensions),
                    )  # fmt: skip
                except InvalidQuery as exc:
                    raise UsageError(f"{persona_field(req, str(exc))}: {exc}") from None
                return persona(rt.store, p.id, q, aset.get_settings(rt.state, p.id))

            return call_project_api(
                settings, project, "POST", "/api/v1/audience/persona", local, json=json_body,
                project_in="body",
            )  # fmt: skip

        def show(result: Any) -> None:
            for t in persona_tables(result):
                console.print(t)

        execute(make, json_out, show)

    @app.command("profile", rich_help_panel="Audience")
    def profile_command(
        key: Annotated[str, typer.Argument(help="A person id or any of their distinct ids.")],
        events: Annotated[int, typer.Option(help="Latest events shown (0: none).")] = 20,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """A person's profile: properties, ids, first touch, stage, RFM, segments, timeline."""
        from urllib.parse import quote

        from yunying.audience import profile as pr
        from yunying.audience import settings as aset
        from yunying.audience.stages import local_today

        settings = settings_of(data_dir, events_url, state_url)

        def make() -> Any:
            if not 0 <= events <= 500:
                raise UsageError("--events must be between 0 and 500")
            path = f"/api/v1/audience/persons/{quote(key, safe='')}"

            def local(rt: "Runtime", p: "Project") -> Any:
                s = aset.get_settings(rt.state, p.id)
                return pr.person_profile(
                    rt.store, p.id, key, s, p.timezone, local_today(p.timezone)
                )

            result = dict(call_project_api(settings, project, "GET", path, local))
            if events:
                result["timeline"] = call_project_api(
                    settings, project, "GET", f"{path}/events",
                    lambda rt, p: pr.person_events(rt.store, p.id, key, events),
                    params={"limit": events},
                )  # fmt: skip
            return result

        def show(result: Any) -> None:
            t = Table("field", "value", title=f"person {result['person_id']}")
            for k in ("distinct_ids", "first_seen", "last_seen", "first_touch_channel",
                      "events", "lifetime_revenue", "stage", "rfm", "segments", "tags",
                      "properties"):  # fmt: skip
                v = result.get(k)
                t.add_row(k, escape(v if isinstance(v, str) else orjson.dumps(v).decode()))
            console.print(t)
            if result.get("timeline"):
                ev = Table("time (UTC)", "event", "distinct id")
                for e in result["timeline"]["events"]:
                    ev.add_row(e["timestamp"], escape(e["event"]), escape(e["distinct_id"]))
                console.print(ev)

        execute(make, json_out, show)

    settings_app = typer.Typer(
        help="Show or change a project's audience settings (lifecycle thresholds, RFM...).",
        no_args_is_help=True,
    )
    app.add_typer(settings_app, name="audience-settings", rich_help_panel="Audience")

    @settings_app.command("show")
    def settings_show(
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Print the settings (defaults where none were stored)."""
        from yunying.audience import settings as aset

        settings = settings_of(data_dir, events_url, state_url)

        def make() -> Any:
            return call_project_api(
                settings, project, "GET", "/api/v1/audience/settings",
                lambda rt, p: {
                    "project": p.name,
                    "settings": aset.get_settings(rt.state, p.id).model_dump(mode="json"),
                },
            )  # fmt: skip

        execute(make, json_out, lambda r: console.print_json(orjson.dumps(r).decode()))

    @settings_app.command("set")
    def settings_set(
        changes: Annotated[
            list[str],
            typer.Argument(help="KEY=VALUE changes: lifecycle.silent_days=10 rfm.scoring=fixed"),
        ],
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Change settings by dotted key (values are JSON when they parse, else text)."""
        from yunying.audience import settings as aset

        settings = settings_of(data_dir, events_url, state_url)

        def make() -> Any:
            parsed = dict(parse_change(c) for c in changes)
            current = call_project_api(
                settings, project, "GET", "/api/v1/audience/settings",
                lambda rt, p: {
                    "project": p.name,
                    "settings": aset.get_settings(rt.state, p.id).model_dump(mode="json"),
                },
            )  # fmt: skip
            updated = aset.with_changes(
                aset.AudienceSettings.model_validate(current["settings"]), parsed
            )
            doc = updated.model_dump(mode="json")
            return call_project_api(
                settings, project, "PUT", "/api/v1/audience/settings",
                lambda rt, p: {
                    "project": p.name,
                    "settings": aset.put_settings(rt.state, p.id, doc).model_dump(mode="json"),
                },
                json=doc,
            )  # fmt: skip

        execute(make, json_out, lambda r: console.print_json(orjson.dumps(r).decode()))

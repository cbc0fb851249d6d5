"""Segments and tags: `yunying segment create|list|show|members|export|recompute|delete|snapshot|
upload`, `yunying tag create|list|show|members|recompute|delete`.

Every command answers what the HTTP API answers (``/api/v1/segments``, ``/api/v1/tags``): through
the running server for this data dir when there is one, else computed here with the same
functions (:mod:`yunying.audience.segments`). ``--json`` prints that answer; without it, tables.
Rule files are YAML or JSON: either the rule tree itself, or a document with ``rules`` and any of
``name``, ``description``, ``schedule_minutes`` (options override the file).
"""

# no `from __future__ import annotations`: Typer reads the option types of the commands defined
# inside register(), which refer to names local to it.

import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from yunying.config import Settings
    from yunying.runtime import Runtime


class UsageError(Exception):
    """An option or file the command cannot turn into a request."""


def read_definition(path: Path) -> dict[str, Any]:
    """A rule file (YAML or JSON) as ``{"rules": ..., "name"?: ..., ...}``."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML or JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a rule tree or a document with 'rules'")
    if "type" in data:
        return {"rules": data}
    if "rules" not in data:
        raise UsageError(f"{path} must hold a rule tree (with 'type') or a document with 'rules'")
    known = {"rules", "name", "description", "schedule_minutes"}
    extra = sorted(set(data) - known)
    if extra:
        raise UsageError(f"{path}: unknown keys {', '.join(extra)}; use {', '.join(sorted(known))}")
    return dict(data)


def _when(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text).isoformat()
    except ValueError:
        raise UsageError("--now must be an ISO time like 2026-11-01T09:00:00+08:00") from None


# -- human output -----------------------------------------------------------------------------------


def _ts(value: str | None) -> str:
    return "" if not value else value.replace("T", " ")[:19]


def _size(value: Any) -> str:
    return "" if value is None else f"{int(value):,}"


def segments_table(items: list[dict[str, Any]]) -> Table:
    table = Table("id", "name", "kind", "size", "last computed (UTC)", "schedule", "error")
    for s in items:
        table.add_row(
            str(s["id"]),
            escape(s["name"]),
            s["kind"],
            _size(s["size"]),
            _ts(s["last_computed_at"]),
            f"every {s['schedule_minutes']} min" if s.get("schedule_minutes") else "",
            escape(s.get("last_error") or ""),
        )
    return table


def tags_table(items: list[dict[str, Any]]) -> Table:
    table = Table("id", "name", "size", "last computed (UTC)", "schedule", "description")
    for t in items:
        table.add_row(
            str(t["id"]),
            escape(t["name"]),
            _size(t["size"]),
            _ts(t["last_computed_at"]),
            f"every {t['schedule_minutes']} min" if t.get("schedule_minutes") else "",
            escape(t.get("description") or ""),
        )
    return table


def members_table(page: dict[str, Any]) -> Table:
    table = Table("person_id", "distinct ids", "properties")
    for p in page["persons"]:
        props = ", ".join(f"{k}={v}" for k, v in list(p["properties"].items())[:6])
        table.add_row(p["person_id"], escape(" ".join(p["distinct_ids"][:3])), escape(props))
    return table


def sizes_table(sizes: list[dict[str, Any]]) -> Table:
    table = Table("computed at (UTC)", "size")
    for h in sizes:
        table.add_row(_ts(h["computed_at"]), _size(h["size"]))
    return table


# -- commands ---------------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    """Add the ``segment`` and ``tag`` command groups to the ``yunying`` app."""
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

    segment_app = typer.Typer(
        help="Segments (用户分群): rule-based or uploaded groups of persons.",
        no_args_is_help=True,
    )
    tag_app = typer.Typer(help="Tags (标签): named rules that stamp persons.", no_args_is_help=True)
    app.add_typer(segment_app, name="segment", rich_help_panel="Audience")
    app.add_typer(tag_app, name="tag", rich_help_panel="Audience")

    Ref = Annotated[str, typer.Argument(help="Segment id or name.")]
    TagRef = Annotated[str, typer.Argument(help="Tag name or id.")]
    File = Annotated[Path, typer.Option("--file", "-f", help="Rule file, YAML or JSON.")]
    Now = Annotated[
        str | None, typer.Option(help="Evaluate rules as of this ISO time (default: now).")
    ]

    def raw(
        settings: "Settings",
        method: str,
        path: str,
        params: dict[str, Any],
        content: bytes | None = None,
    ) -> Any:
        """A non-JSON exchange (CSV) with the running server, or None when none runs."""
        import httpx

        from yunying.cli.remote import find_server

        server = find_server(settings)
        if server is None:
            return None
        resp = httpx.request(
            method,
            server.url + path,
            params={k: v for k, v in params.items() if v is not None},
            content=content,
            headers={"Authorization": f"Bearer {server.admin_token}", "Content-Type": "text/csv"},
            timeout=600,
        )
        if resp.status_code >= 400:
            try:
                fail(f"server answered {resp.status_code}: {resp.json().get('error')}")
            except ValueError:
                fail(f"server answered {resp.status_code}: {resp.text[:200]}")
        return resp

    def guard(make: Callable[[], Any]) -> Any:
        try:
            return make()
        except UsageError as exc:
            fail(str(exc))

    def show(result: Any, json_out: bool, human: Callable[[Any], None]) -> None:
        if json_out:
            print_json(result)
        else:
            human(result)

    # -- segment ------------------------------------------------------------------------------

    @segment_app.command("create")
    def segment_create(
        file: Annotated[
            Path | None, typer.Option("--file", "-f", help="Rule file, YAML or JSON.")
        ] = None,
        name: Annotated[
            str | None, typer.Option(help="Segment name (or 'name' in the file).")
        ] = None,
        description: Annotated[str | None, typer.Option(help="What the segment is for.")] = None,
        schedule: Annotated[
            int | None, typer.Option(help="Recompute every this many minutes.")
        ] = None,
        static: Annotated[
            bool, typer.Option("--static", help="A static segment (members by `upload`).")
        ] = False,
        no_compute: Annotated[
            bool, typer.Option("--no-compute", help="Save without computing now.")
        ] = False,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Create a segment from a rule file (or an empty static one) and compute it."""
        from yunying.audience import segments as S
        from yunying.web.segments_api import SegmentCreate, parse_body

        def make() -> dict[str, Any]:
            doc: dict[str, Any] = {}
            if file is not None:
                doc = read_definition(file)
            elif not static:
                raise UsageError("--file is required for a dynamic segment (or use --static)")
            body = {
                "name": name or doc.get("name"),
                "description": description if description is not None
                else doc.get("description", ""),
                "kind": "static" if static else "dynamic",
                "rules": None if static else doc.get("rules"),
                "schedule_minutes": schedule if schedule is not None
                else doc.get("schedule_minutes"),
                "compute": not no_compute,
            }  # fmt: skip
            if not body["name"]:
                raise UsageError("give the segment a --name (or 'name' in the file)")
            return body

        body = guard(make)

        def local(rt: "Runtime", proj: Any) -> Any:
            req = parse_body(SegmentCreate, body)
            s = S.create_segment(rt, proj, req.name, kind=req.kind, rules=req.rules,
                                 description=req.description,
                                 schedule_minutes=req.schedule_minutes)  # fmt: skip
            if req.compute and s.kind == "dynamic":
                s = S.compute_segment(rt, proj, s.id)
            return s.as_dict()

        result = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "POST", "/api/v1/segments",
            local, json=body, project_in="both",
        )  # fmt: skip
        show(result, json_out, lambda r: console.print(segments_table([r])))

    @segment_app.command("list")
    def segment_list(
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Every segment with its size and when it was last computed."""
        from yunying.audience import segments as S

        def local(rt: "Runtime", proj: Any) -> Any:
            return {"segments": [s.as_dict() for s in S.list_segments(rt.state, proj.id)]}

        result = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "GET", "/api/v1/segments", local
        )
        show(result, json_out, lambda r: console.print(segments_table(r["segments"])))

    @segment_app.command("show")
    def segment_show(
        ref: Ref,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """One segment: its definition, size and size history."""
        from yunying.audience import segments as S

        def local(rt: "Runtime", proj: Any) -> Any:
            s = S.get_segment(rt.state, proj.id, ref)
            return {**s.as_dict(), "sizes": S.size_history(rt.state, s.id, 30)}

        result = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "GET", f"/api/v1/segments/{ref}",
            local,
        )  # fmt: skip

        def human(r: dict[str, Any]) -> None:
            import yaml

            console.print(segments_table([r]))
            if r.get("description"):
                console.print(escape(r["description"]))
            if r.get("rules"):
                console.print(
                    escape(yaml.safe_dump(r["rules"], allow_unicode=True, sort_keys=False))
                )
            console.print(sizes_table(r["sizes"]))

        show(result, json_out, human)

    @segment_app.command("members")
    def segment_members(
        ref: Ref,
        limit: Annotated[int, typer.Option(help="Persons per page (at most 1000).")] = 50,
        offset: Annotated[int, typer.Option(help="Persons to skip.")] = 0,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """A page of the segment's members (person id, distinct ids, properties)."""
        from yunying.audience import segments as S

        def local(rt: "Runtime", proj: Any) -> Any:
            s = S.get_segment(rt.state, proj.id, ref)
            return {"segment": s.as_dict(), **S.members_page(rt, proj, s.scope, limit, offset)}

        result = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "GET",
            f"/api/v1/segments/{ref}/members", local, params={"limit": limit, "offset": offset},
        )  # fmt: skip

        def human(r: dict[str, Any]) -> None:
            console.print(members_table(r))
            shown = len(r["persons"])
            console.print(
                f"{r['offset'] + 1 if shown else 0}–{r['offset'] + shown} of {r['total']:,}"
            )

        show(result, json_out, human)

    @segment_app.command("export")
    def segment_export(
        ref: Ref,
        out: Annotated[
            Path | None, typer.Option("--out", "-o", help="CSV file (default: stdout).")
        ] = None,
        project: ProjectName = None,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Every member as CSV (person_id,distinct_id); `upload` reads it back."""
        export(data_dir, events_url, state_url, "segments", ref, out, project)

    def export(
        data_dir: Any, events_url: Any, state_url: Any, what: str, ref: str, out: Any,
        project: str | None,
    ) -> None:  # fmt: skip
        from yunying.audience import segments as S
        from yunying.audience import tags as T

        settings = settings_of(data_dir, events_url, state_url)
        resp = raw(settings, "GET", f"/api/v1/{what}/{ref}/export", {"project": project})
        if resp is not None:
            chunks: Any = [resp.text]
        else:
            from yunying.cli.main import open_runtime
            from yunying.state import get_project

            rt = open_runtime(settings)
            try:
                proj = get_project(rt.state, project)
                if what == "segments":
                    scope = S.get_segment(rt.state, proj.id, ref).scope
                else:
                    scope = T.get_tag(rt.state, proj.id, ref).scope
                chunks = list(S.export_csv(rt, proj, scope))
            except YunyingError as exc:
                fail(str(exc))
            finally:
                rt.close()
        if out is None:
            for c in chunks:
                sys.stdout.write(c)
        else:
            out.write_text("".join(chunks), encoding="utf-8")

    @segment_app.command("recompute")
    def segment_recompute(
        ref: Annotated[
            str | None, typer.Argument(help="Segment id or name (omit with --all).")
        ] = None,
        all_: Annotated[
            bool,
            typer.Option("--all", help="Stages, RFM, every tag, every segment (dependency order)."),
        ] = False,
        now: Now = None,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Compute a segment now, or everything with --all."""
        from yunying.audience import segments as S

        if (ref is None) == (not all_):
            fail("give a segment, or --all")
        when = guard(lambda: _when(now))
        moment = None if when is None else datetime.fromisoformat(when)
        if all_:

            def local_all(rt: "Runtime", proj: Any) -> Any:
                return S.recompute_all(rt, proj, moment).as_dict()

            result = call_project_api(
                settings_of(data_dir, events_url, state_url), project, "POST",
                "/api/v1/segments/recompute", local_all, json={"now": when}, project_in="both",
            )  # fmt: skip

            def human(r: dict[str, Any]) -> None:
                table = Table("kind", "id", "name", "size", "seconds")
                for c in r["computed"]:
                    table.add_row(c["kind"], str(c["id"]), escape(c["name"]), _size(c["size"]),
                                  f"{c['seconds']:.2f}")  # fmt: skip
                console.print(table)
                for k, v in r["derived"].items():
                    console.print(f"{k}: {v}")
                for f in r["failed"]:
                    console.print(f"[red]failed[/] {f['kind']} {f['ref']}: {escape(f['error'])}")
                console.print(f"{r['seconds']:.2f} s")

            show(result, json_out, human)
            return

        def local(rt: "Runtime", proj: Any) -> Any:
            return S.compute_segment(rt, proj, str(ref), moment).as_dict()

        result = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "POST",
            f"/api/v1/segments/{ref}/recompute", local, json={"now": when}, project_in="both",
        )  # fmt: skip
        show(result, json_out, lambda r: console.print(segments_table([r])))

    @segment_app.command("delete")
    def segment_delete(
        ref: Ref,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Delete a segment and its membership (refused while a rule reads it)."""
        from yunying.audience import segments as S

        def local(rt: "Runtime", proj: Any) -> Any:
            S.delete_segment(rt, proj, ref)
            return {"deleted": ref}

        result = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "DELETE",
            f"/api/v1/segments/{ref}", local,
        )  # fmt: skip
        show(result, json_out, lambda r: console.print(f"deleted segment {escape(ref)}"))

    @segment_app.command("snapshot")
    def segment_snapshot(
        ref: Ref,
        name: Annotated[str | None, typer.Option(help="Name of the static copy.")] = None,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Freeze the current members into a new static segment."""
        from yunying.audience import segments as S

        def local(rt: "Runtime", proj: Any) -> Any:
            return S.snapshot_segment(rt, proj, ref, name).as_dict()

        result = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "POST",
            f"/api/v1/segments/{ref}/snapshot", local, json={"name": name}, project_in="both",
        )  # fmt: skip
        show(result, json_out, lambda r: console.print(segments_table([r])))

    @segment_app.command("upload")
    def segment_upload(
        ref: Ref,
        file: Annotated[Path, typer.Option("--file", "-f", help="CSV of distinct or person ids.")],
        id_type: Annotated[
            str | None,
            typer.Option(help="distinct_id or person_id (default: the CSV header, else distinct)."),
        ] = None,
        append: Annotated[
            bool, typer.Option("--append", help="Add to the members instead of replacing them.")
        ] = False,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Set the members of a static segment from a CSV file."""
        from yunying.audience import segments as S

        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read {file}: {exc}")
        mode = "append" if append else "replace"
        settings = settings_of(data_dir, events_url, state_url)
        params = {"project": project, "id_type": id_type, "mode": mode}
        resp = raw(settings, "POST", f"/api/v1/segments/{ref}/upload", params, text.encode())
        if resp is not None:
            result = resp.json()
        else:
            from yunying.cli.main import open_runtime
            from yunying.state import get_project

            rt = open_runtime(settings)
            try:
                proj = get_project(rt.state, project)
                result = S.upload_members(rt, proj, ref, text, id_type, mode).as_dict()  # type: ignore[arg-type]
            except YunyingError as exc:
                fail(str(exc))
            finally:
                rt.close()

        def human(r: dict[str, Any]) -> None:
            console.print(
                f"{r['rows']:,} ids ({r['id_type']}): {r['matched']:,} matched, "
                f"{r['unmatched']:,} unknown"
                + (f" (e.g. {', '.join(r['unmatched_sample'][:5])})" if r["unmatched"] else "")
            )
            console.print(segments_table([r["segment"]]))

        show(result, json_out, human)

    # -- tag ----------------------------------------------------------------------------------

    @tag_app.command("create")
    def tag_create(
        file: File,
        name: Annotated[str | None, typer.Option(help="Tag name (or 'name' in the file).")] = None,
        description: Annotated[str | None, typer.Option(help="What the tag means.")] = None,
        schedule: Annotated[
            int | None, typer.Option(help="Recompute every this many minutes.")
        ] = None,
        no_compute: Annotated[
            bool, typer.Option("--no-compute", help="Save without computing now.")
        ] = False,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Create a tag from a rule file and stamp its persons."""
        from yunying.audience import segments as S
        from yunying.audience import tags as T
        from yunying.web.segments_api import TagCreate, parse_body

        def make() -> dict[str, Any]:
            doc = read_definition(file)
            body = {
                "name": name or doc.get("name"),
                "description": description if description is not None
                else doc.get("description", ""),
                "rules": doc["rules"],
                "schedule_minutes": schedule if schedule is not None
                else doc.get("schedule_minutes"),
                "compute": not no_compute,
            }  # fmt: skip
            if not body["name"]:
                raise UsageError("give the tag a --name (or 'name' in the file)")
            return body

        body = guard(make)

        def local(rt: "Runtime", proj: Any) -> Any:
            req = parse_body(TagCreate, body)
            t = T.create_tag(rt.state, proj, req.name, req.rules, req.description,
                             req.schedule_minutes)  # fmt: skip
            if req.compute:
                t = S.compute_tag(rt, proj, t.id)
            return t.as_dict()

        result = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "POST", "/api/v1/tags", local,
            json=body, project_in="both",
        )  # fmt: skip
        show(result, json_out, lambda r: console.print(tags_table([r])))

    @tag_app.command("list")
    def tag_list(
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Every tag with its size and when it was last computed."""
        from yunying.audience import tags as T

        def local(rt: "Runtime", proj: Any) -> Any:
            return {"tags": [t.as_dict() for t in T.list_tags(rt.state, proj.id)]}

        result = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "GET", "/api/v1/tags", local
        )
        show(result, json_out, lambda r: console.print(tags_table(r["tags"])))

    @tag_app.command("show")
    def tag_show(
        ref: TagRef,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """One tag and its rule."""
        from yunying.audience import tags as T

        def local(rt: "Runtime", proj: Any) -> Any:
            return T.get_tag(rt.state, proj.id, ref).as_dict()

        result = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "GET", f"/api/v1/tags/{ref}",
            local,
        )  # fmt: skip
        show(result, json_out, lambda r: console.print(tags_table([r])))

    @tag_app.command("members")
    def tag_members(
        ref: TagRef,
        limit: Annotated[int, typer.Option(help="Persons per page (at most 1000).")] = 50,
        offset: Annotated[int, typer.Option(help="Persons to skip.")] = 0,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """A page of the persons carrying the tag."""
        from yunying.audience import segments as S
        from yunying.audience import tags as T

        def local(rt: "Runtime", proj: Any) -> Any:
            t = T.get_tag(rt.state, proj.id, ref)
            return {"tag": t.as_dict(), **S.members_page(rt, proj, t.scope, limit, offset)}

        result = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "GET",
            f"/api/v1/tags/{ref}/members", local, params={"limit": limit, "offset": offset},
        )  # fmt: skip
        show(result, json_out, lambda r: console.print(members_table(r)))

    @tag_app.command("recompute")
    def tag_recompute(
        ref: TagRef,
        now: Now = None,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Stamp the tag's persons again now."""
        from yunying.audience import segments as S

        when = guard(lambda: _when(now))
        moment = None if when is None else datetime.fromisoformat(when)

        def local(rt: "Runtime", proj: Any) -> Any:
            return S.compute_tag(rt, proj, ref, moment).as_dict()

        result = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "POST",
            f"/api/v1/tags/{ref}/recompute", local, json={"now": when}, project_in="both",
        )  # fmt: skip
        show(result, json_out, lambda r: console.print(tags_table([r])))

    @tag_app.command("delete")
    def tag_delete(
        ref: TagRef,
        project: ProjectName = None,
        json_out: JSONOut = False,
        data_dir: DataDir = None,
        events_url: EventsURL = None,
        state_url: StateURL = None,
    ) -> None:
        """Delete a tag and its stamps (refused while a rule reads it)."""
        from yunying.audience import segments as S

        def local(rt: "Runtime", proj: Any) -> Any:
            S.delete_tag(rt, proj, ref)
            return {"deleted": ref}

        result = call_project_api(
            settings_of(data_dir, events_url, state_url), project, "DELETE", f"/api/v1/tags/{ref}",
            local,
        )  # fmt: skip
        show(result, json_out, lambda r: console.print(f"deleted tag {escape(ref)}"))

"""Segments and tags as plain functions: computing in dependency order on both engines against
the Python reference, cycles, static uploads, snapshots, members, export, schedules."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tests.audience.conftest import NOW, Loaded, World, fresh, load_world, make_world
from tests.audience.conftest import reference_members as ref
from yunying.audience import segments as S
from yunying.audience import tags as T
from yunying.errors import Conflict, NotFound
from yunying.state import Project, get_project


def _project(rt: Any) -> Project:
    return get_project(rt.state)


def _scope_members(rt: Any, pid: int, scope: str) -> list[str]:
    rows = rt.store.query(
        f"SELECT CAST(person_id AS VARCHAR) FROM person_values "
        f"WHERE project_id = {pid} AND scope = '{scope}'"
        if rt.store.dialect == "duckdb"
        else f"SELECT toString(person_id) FROM person_values "
        f"WHERE project_id = {pid} AND scope = '{scope}'"
    ).rows
    return sorted(r[0] for r in rows)


def test_tags_then_segments_in_dependency_order_on_both_engines(loaded: Loaded) -> None:
    """A segment reading a segment reading a tag: computed after them, members as in Python."""
    heavy = {"type": "event", "event": "edit_video", "times": 3, "window": {"last_days": 30}}
    world = loaded.world
    tag_members = ref(world, heavy)
    for rt, pid in loaded.both():
        project = _project(rt)
        T.create_tag(rt.state, project, "heavy_editor", heavy, "edits a lot")
        a = S.create_segment(
            rt,
            project,
            "beijing heavy",
            rules={"type": "and", "rules": [
                {"type": "tag", "name": "heavy_editor"},
                {"type": "property", "name": "city", "op": "eq", "value": "北京"}]},
        )  # fmt: skip
        b = S.create_segment(
            rt,
            project,
            "others",
            rules={"type": "not", "rule": {"type": "segment", "id": a.id}},
            schedule_minutes=60,
        )
        # stored definitions are computed tag -> a -> b whatever their ids
        order = S.dependency_order(rt.state, project.id)
        assert order.index(("tag", "heavy_editor")) < order.index(("segment", str(a.id)))
        assert order.index(("segment", str(a.id))) < order.index(("segment", str(b.id)))
        report = S.recompute_all(rt, project, NOW, derived=False)
        assert not report.failed, report.failed
        assert [c["kind"] for c in report.computed][:1] == ["tag"]
        assert report.query_seconds is not None  # all three by one query

        # the reference: the tag's members, then A, then B over the same world
        w = World(world.persons, world.distinct, world.events, dict(world.values))
        w.values["tag:heavy_editor"] = dict.fromkeys(tag_members)
        want_a = ref(w, S.get_segment(rt.state, pid, a.id).rules or {})
        w.values[f"segment:{a.id}"] = dict.fromkeys(want_a)
        want_b = ref(w, S.get_segment(rt.state, pid, b.id).rules or {})
        assert _scope_members(rt, pid, "tag:heavy_editor") == tag_members
        assert _scope_members(rt, pid, f"segment:{a.id}") == want_a
        assert _scope_members(rt, pid, f"segment:{b.id}") == want_b
        assert S.get_segment(rt.state, pid, b.id).size == len(want_b)
        assert T.get_tag(rt.state, pid, "heavy_editor").size == len(tag_members)
        assert 0 < len(want_a) < len(want_b)


def test_cycles_missing_references_and_deletes_are_refused(tmp_path: Path) -> None:
    rt, pid = fresh(tmp_path)
    try:
        project = _project(rt)
        a = S.create_segment(rt, project, "a", rules={"type": "stage", "in": ["new"]})
        b = S.create_segment(rt, project, "b", rules={"type": "segment", "id": a.id})
        with pytest.raises(S.DependencyCycle, match=f"segment {a.id} → segment {b.id}"):
            S.update_segment(rt, project, a.id, {"rules": {"type": "segment", "id": b.id}})
        with pytest.raises(S.DependencyCycle):
            S.update_segment(rt, project, a.id, {"rules": {"type": "segment", "id": a.id}})
        with pytest.raises(S.InvalidSegment) as info:
            S.create_segment(rt, project, "c", rules={"type": "or", "rules": [
                {"type": "stage", "in": ["new"]}, {"type": "segment", "id": 999}]})  # fmt: skip
        assert info.value.field == "rules.rules.1.id"
        with pytest.raises(S.InvalidSegment) as info:
            S.create_segment(rt, project, "c", rules={"type": "tag", "name": "nope"})
        assert info.value.field == "rules.name"
        T.create_tag(rt.state, project, "t1", {"type": "segment", "id": b.id})
        with pytest.raises(S.DependencyCycle):
            S.update_segment(rt, project, a.id, {"rules": {"type": "tag", "name": "t1"}})
        with pytest.raises(Conflict, match="used by segment"):
            S.delete_segment(rt, project, a.id)
        with pytest.raises(Conflict, match="already exists"):
            S.create_segment(rt, project, "a", rules={"type": "stage", "in": ["new"]})
        with pytest.raises(S.InvalidSegment) as info:
            S.create_segment(rt, project, "d", rules={"type": "stage", "in": ["zombie"]})
        assert info.value.field == "rules.in.0"
        S.delete_tag(rt, project, "t1")
        S.delete_segment(rt, project, b.id)
        S.delete_segment(rt, project, "a")
        with pytest.raises(NotFound):
            S.get_segment(rt.state, pid, a.id)
    finally:
        rt.close()


def test_static_upload_members_export_snapshot(tmp_path: Path) -> None:
    rt, pid = fresh(tmp_path)
    world = make_world(5, persons=60)
    load_world(rt, pid, world)
    try:
        project = _project(rt)
        by_did = sorted(world.distinct.items())
        chosen = by_did[:10]
        text = "distinct_id,note\n" + "".join(f"{d},x\n" for d, _ in chosen) + "nobody,x\n\n"
        seg = S.create_segment(rt, project, "vip list", kind="static")
        report = S.upload_members(rt, project, seg.id, text)
        assert (report.rows, report.matched, report.unmatched) == (11, 10, 1)
        assert report.unmatched_sample == ["nobody"]
        want = sorted({p for _, p in chosen})
        assert _scope_members(rt, pid, seg.scope) == want
        assert report.segment.size == len(want)

        # append person ids (no header: id_type given)
        extra = sorted(set(world.persons) - set(want))[:3]
        S.upload_members(rt, project, seg.id, "\n".join(extra), id_type="person_id",
                         mode="append")  # fmt: skip
        want = sorted({*want, *extra})
        assert _scope_members(rt, pid, seg.scope) == want

        page = S.members_page(rt, project, seg.scope, limit=5, offset=5)
        assert page["total"] == len(want)
        assert [p["person_id"] for p in page["persons"]] == want[5:10]
        for p in page["persons"]:
            assert p["distinct_ids"] == sorted(
                d for d, q in world.distinct.items() if q == p["person_id"]
            )
            assert p["properties"] == {k: v for k, v in world.persons[p["person_id"]].items()}

        rows = list(csv.reader(io.StringIO("".join(S.export_csv(rt, project, seg.scope)))))
        assert rows[0] == ["person_id", "distinct_id"]
        assert sorted({r[0] for r in rows[1:]}) == want
        # the export uploads back as the same members
        again = S.create_segment(rt, project, "again", kind="static")
        back = S.upload_members(
            rt, project, again.id, "".join(S.export_csv(rt, project, seg.scope))
        )
        assert back.id_type == "person_id" and back.segment.size == len(want)

        dyn = S.create_segment(rt, project, "buyers", rules={
            "type": "event", "event": "purchase_membership"})  # fmt: skip
        snap = S.snapshot_segment(rt, project, dyn.id, "buyers frozen")
        assert snap.kind == "static" and snap.source == f"snapshot:{dyn.id}"
        frozen = _scope_members(rt, pid, snap.scope)
        assert frozen == ref(world, {"type": "event", "event": "purchase_membership"},
                             now=S._now(None))  # fmt: skip
        # the snapshot survives a store reset of its scope: recompute rewrites it from state
        S.delete_segment(rt, project, again.id)
        S.compute_segment(rt, project, snap.id)
        assert _scope_members(rt, pid, snap.scope) == frozen

        with pytest.raises(S.InvalidSegment, match="dynamic"):
            S.upload_members(rt, project, dyn.id, "a\n")
        with pytest.raises(S.InvalidSegment, match="no ids"):
            S.upload_members(rt, project, seg.id, "distinct_id\n\n")
    finally:
        rt.close()


def test_schedule_and_size_history(tmp_path: Path) -> None:
    rt, pid = fresh(tmp_path)
    world = make_world(6, persons=50)
    load_world(rt, pid, world)
    try:
        project = _project(rt)
        rule = {"type": "event", "event": "edit_video", "window": {"last_days": 1000}}
        seg = S.create_segment(rt, project, "weekly editors", rules=rule, schedule_minutes=30)
        manual = S.create_segment(rt, project, "manual", rules=rule)
        tag = T.create_tag(rt.state, project, "t", rule, schedule_minutes=30)
        reports = S.recompute_due(rt, NOW)
        assert [(c["kind"], c["name"]) for c in reports[0].computed] == [
            ("tag", "t"), ("segment", "weekly editors")]  # fmt: skip
        first = S.get_segment(rt.state, pid, seg.id)
        assert first.size == len(ref(world, rule)) and first.last_computed_at is not None
        assert S.get_segment(rt.state, pid, manual.id).last_computed_at is None
        assert S.recompute_due(rt, first.last_computed_at + timedelta(minutes=29)) == []
        later = first.last_computed_at + timedelta(minutes=31)
        again = S.recompute_due(rt, later)
        assert len(again[0].computed) == 2
        history = S.size_history(rt.state, seg.id)
        # "now" is also the moment the rules are evaluated at
        assert [h["size"] for h in history] == [len(ref(world, rule)), len(ref(world, rule, later))]
        assert history[0]["computed_at"] < history[1]["computed_at"]
        assert T.get_tag(rt.state, pid, tag.id).size == len(ref(world, rule, later))
    finally:
        rt.close()


def test_parse_csv_forms() -> None:
    assert S.parse_csv("a\nb\na\n") == ("distinct_id", ["a", "b"])
    assert S.parse_csv("\ufeffperson_id\nx\n") == ("person_id", ["x"])
    assert S.parse_csv("name,id\nq,1\nr,2\n", "person_id") == ("person_id", ["1", "2"])
    with pytest.raises(S.InvalidSegment, match="id_type"):
        S.parse_csv("a", "email")


def test_a_segment_on_stages_computes_them_first_when_none_are_stored(tmp_path: Path) -> None:
    """Creating a segment that reads lifecycle stages must not run on missing (or stale) ones."""
    rt, pid = fresh(tmp_path)
    try:
        load_world(rt, pid, make_world(7, persons=60))
        project = _project(rt)
        rt.store.replace_person_values(pid, "stage", pa.table({"person_id": pa.array([], "str")}))
        seg = S.create_segment(
            rt, project, "gone", rules={"type": "stage", "in": ["silent", "churned"]}
        )
        S.compute_segment(rt, project, seg.id)
        stored = rt.store.query(
            f"SELECT CAST(person_id AS VARCHAR), label FROM person_values "
            f"WHERE project_id = {pid} AND scope = 'stage'"
        ).rows
        want = sorted(p for p, label in stored if label in ("silent", "churned"))
        assert stored and want
        assert _scope_members(rt, pid, f"segment:{seg.id}") == want
    finally:
        rt.close()


def test_batch_reads_static_segments_and_falls_back_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full recompute writes static segments first (a dynamic one of the batch reads them),
    gives the same members as computing each definition by its own query, and if the batch
    query fails computes them one by one."""
    rt, pid = fresh(tmp_path)
    world = make_world(8, persons=80)
    load_world(rt, pid, world)
    try:
        project = _project(rt)
        chosen = sorted(world.persons)[:30]
        static = S.create_segment(rt, project, "list", kind="static")
        S.set_static_members(rt.state, static.id, chosen, replace=True)
        tag = {"type": "event", "event": "edit_video", "times": 2}
        T.create_tag(rt.state, project, "editor", tag)
        rules = [
            {"type": "and", "rules": [{"type": "segment", "id": static.id},
                                      {"type": "tag", "name": "editor"}]},
            {"type": "or", "rules": [{"type": "property", "name": "city", "op": "eq",
                                      "value": "北京"},
                                     {"type": "aggregate", "event": "purchase_membership",
                                      "value": 30, "window": {"last_days": 20}}]},
        ]  # fmt: skip
        segs = [S.create_segment(rt, project, f"s{i}", rules=r) for i, r in enumerate(rules)]
        editors = ref(world, tag)
        want = [sorted(set(chosen) & set(editors)), ref(world, rules[1])]

        def check(report: S.RecomputeReport) -> None:
            assert not report.failed, report.failed
            assert _scope_members(rt, pid, static.scope) == sorted(chosen)
            assert _scope_members(rt, pid, "tag:editor") == editors
            for seg, w in zip(segs, want, strict=True):
                assert _scope_members(rt, pid, seg.scope) == w
                assert S.get_segment(rt.state, pid, seg.id).size == len(w)

        report = S.recompute_all(rt, project, NOW, derived=False)
        assert report.query_seconds is not None
        assert [c["name"] for c in report.computed][0] == "list"
        check(report)
        rt.store.replace_person_values(pid, "tag:editor", pa.table({"person_id": pa.array(
            [], "str")}))  # fmt: skip

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("no batch today")

        monkeypatch.setattr(S, "run_batch", broken)
        report = S.recompute_all(rt, project, NOW, derived=False)
        assert report.query_seconds is None
        check(report)
    finally:
        rt.close()

"""The events-engine signals on both engines (DuckDB and embedded ClickHouse): same answers."""

from __future__ import annotations

from datetime import timedelta

from yunying.risk import RiskPolicy, assess
from yunying.runtime import Runtime
from yunying.state import create_project

from .helpers import NOW, EdgeList, ev, ingest, make_claim, person_of


def test_signals_on_each_engine(engine_runtime: Runtime) -> None:
    rt = engine_runtime
    pid = create_project(rt.state, "engines").project.id
    t = NOW - timedelta(minutes=30)  # the farm signed up half an hour ago
    raws = [ev(f"f{i}", "sign_up", t, device="shared", ip=f"203.0.113.{i + 1}") for i in range(11)]
    raws += [ev("f0", "export_video", t, device="shared", ip="203.0.113.1")]
    raws += [ev("old", "sign_up", NOW - timedelta(days=9), device="own", ip="2001:db8::5")]
    raws += [ev("old", "edit_video", NOW - timedelta(days=1), device="own", ip="2001:db8::5")] * 2
    ingest(rt, pid, raws)
    f0, f1, old = (person_of(rt, pid, d) for d in ("f0", "f1", "old"))
    graph = EdgeList()
    graph.add(old, f0, t)
    graph.add(f0, f1, t)
    policy = RiskPolicy.from_spec({"velocity": {"enabled": False}})
    claim = make_claim(
        pid, f0, device="shared", ip="203.0.113.1", kind="referral", role="inviter", counterpart=f1
    )
    d = assess(rt, policy, claim, graph)
    codes = {r.code for r in d.reasons}
    assert codes == {"device_shared", "subnet_shared", "invitee_passive", "account_too_new"}
    values = {r.code: r.value for r in d.reasons}
    assert values["device_shared"] == 11 and values["subnet_shared"] == 11
    claim = make_claim(
        pid, old, device="own", ip="2001:db8::5", kind="referral", role="inviter", counterpart=f0
    )
    d = assess(rt, policy, claim, graph)
    assert {r.code for r in d.reasons} == {"invitee_passive"}

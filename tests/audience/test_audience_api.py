"""/api/v1/audience on a real loopback server, and the CLI through it and locally."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from tests.audience.reports_data import START, TZ, lifecycle_journeys, person_ids
from tests.conftest import LiveServer
from yunying.analytics.common import DateRange
from yunying.audience.persona import PersonaQuery, persona
from yunying.audience.profile import person_profile
from yunying.audience.rfm import rfm_report
from yunying.audience.settings import AudienceSettings, get_settings
from yunying.audience.stages import stage_distribution, stage_transitions, stages_over_time
from yunying.cli.main import app
from yunying.config import load_settings
from yunying.ingest.model import validate_batch
from yunying.runtime import Runtime
from yunying.state import NewProject, create_project, get_project

AS_OF = START + timedelta(days=100)
runner = CliRunner()


def load(runtime: Runtime, project_id: int) -> None:
    batch = validate_batch(lifecycle_journeys(5, persons=60), now=datetime(2030, 1, 1))
    runtime.writer.write(project_id, batch.events)


class Client:
    """Management calls with a bearer token."""

    def __init__(self, live: LiveServer, token: str) -> None:
        self.url = f"{live.url}/api/v1/audience"
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.url + path, params=params, headers=self.headers, timeout=60)

    def put(self, path: str, body: Any, **params: Any) -> httpx.Response:
        return httpx.put(
            self.url + path, content=orjson.dumps(body), params=params, headers=self.headers,
            timeout=60,
        )  # fmt: skip

    def post(self, path: str, body: Any = None, **params: Any) -> httpx.Response:
        return httpx.post(
            self.url + path, json=body, params=params, headers=self.headers, timeout=60
        )


def ok(resp: httpx.Response) -> Any:
    assert resp.status_code == 200, resp.text
    return resp.json()


def problem(resp: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"]
    if field is not None:
        assert body.get("field") == field, body
    return dict(body)


def test_reports_over_http(live: LiveServer, runtime: Runtime, project: NewProject) -> None:
    pid = project.project.id
    load(runtime, pid)
    api = Client(live, project.secret_key)
    s = AudienceSettings()
    store = runtime.store

    assert ok(api.get("/stages", as_of=AS_OF.isoformat())) == stage_distribution(
        store, pid, s, AS_OF, TZ
    )
    rng = DateRange(AS_OF - timedelta(days=27), AS_OF, TZ)
    over = ok(api.get("/stages/over-time", date_from=rng.date_from.isoformat(),
                      date_to=AS_OF.isoformat(), interval="week"))  # fmt: skip
    assert over == stages_over_time(store, pid, s, rng, "week")
    moves = ok(api.get("/stages/transitions", date_from=rng.date_from.isoformat(),
                       date_to=AS_OF.isoformat()))  # fmt: skip
    assert moves == stage_transitions(store, pid, s, rng, "week")
    last = moves["periods"][-1]
    move = max(last["transitions"], key=lambda t: t["persons"])
    members = ok(api.get("/stages/transitions/members", as_of=last["as_of"], interval="week",
                         **{"from": move["from"], "to": move["to"]}))  # fmt: skip
    assert members["total"] == move["persons"] == len(members["persons"])

    assert ok(api.get("/rfm", as_of=AS_OF.isoformat())) == rfm_report(store, pid, s, AS_OF, TZ)

    body = {"group": "stage", "value": "silent", "date_from": "2024-03-12",
            "date_to": AS_OF.isoformat(), "properties": ["plan"]}  # fmt: skip
    q = PersonaQuery("stage", DateRange(date(2024, 3, 12), AS_OF, TZ), "silent", ("plan",))
    assert ok(api.post("/persona", body)) == orjson.loads(orjson.dumps(persona(store, pid, q, s)))

    ids = person_ids(store, pid)
    who = next(d for d in ids if d.startswith("luser-"))
    got = ok(api.get(f"/persons/{who}"))
    today = date.fromisoformat(got["stage_as_of"])
    assert got == person_profile(store, pid, ids[who], s, TZ, today)
    assert who in got["distinct_ids"]
    seen: list[str] = []
    cursor = None
    while True:
        page = ok(api.get(f"/persons/{ids[who]}/events", limit=3,
                          **({"cursor": cursor} if cursor else {})))  # fmt: skip
        seen += [e["uuid"] for e in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == got["events"]

    # a distinct id with a slash, as the CLI sends it (percent-encoded)
    slash = validate_batch(
        [{"event": "edit_video", "distinct_id": "wx/openid:1"}], now=datetime(2030, 1, 1)
    )
    runtime.writer.write(pid, slash.events)
    assert ok(api.get("/persons/wx%2Fopenid:1"))["distinct_ids"] == ["wx/openid:1"]
    assert len(ok(api.get("/persons/wx%2Fopenid:1/events"))["events"]) == 1

    stored = ok(api.post("/stages/store", as_of=AS_OF.isoformat()))
    assert stored == {
        "scope": "stage",
        "persons": stage_distribution(store, pid, s, AS_OF, TZ)["total"],
    }
    assert (
        ok(api.post("/rfm/store", as_of=AS_OF.isoformat()))["persons"]
        == ok(api.get("/rfm", as_of=AS_OF.isoformat()))["persons"]
    )


def test_settings_and_errors(live: LiveServer, runtime: Runtime, project: NewProject) -> None:
    api = Client(live, project.secret_key)
    defaults = ok(api.get("/settings"))
    assert defaults["project"] == project.project.name
    assert defaults["settings"] == AudienceSettings().model_dump(mode="json")
    changed = ok(
        api.put("/settings", {"lifecycle": {"silent_days": 10}, "rfm": {"scoring": "fixed"}})
    )
    assert changed["settings"]["lifecycle"]["silent_days"] == 10
    assert changed["settings"]["lifecycle"]["churned_days"] == 30  # omitted: default
    assert ok(api.get("/settings")) == changed
    assert get_settings(runtime.state, project.project.id).rfm.scoring == "fixed"
    bad = problem(api.put("/settings", {"lifecycle": {"silent_days": 0}}), 422,
                  "lifecycle.silent_days")  # fmt: skip
    assert bad["errors"][0]["field"] == "lifecycle.silent_days"
    problem(api.put("/settings", {"lifecycle": {"silent_days": 40}}), 422, "lifecycle")
    problem(api.put("/settings", {"nope": 1}), 422, "nope")
    resp = httpx.put(f"{api.url}/settings", content=b"{not json", headers=api.headers)
    problem(resp, 400)

    problem(api.get("/stages", as_of="yesterday"), 422, "as_of")
    problem(api.get("/stages/over-time", interval="year"), 422, "interval")
    problem(api.get("/stages/over-time", date_from="2024-02-01", date_to="2024-01-01"), 400,
            "date_from")  # fmt: skip
    problem(api.get("/stages/transitions/members", **{"from": "sleepy", "to": "new"}), 400, "from")
    problem(api.get("/stages/transitions/members", **{"from": "none", "to": "none"}), 400, "to")
    problem(api.get("/stages/transitions/members", to="new"), 422, "from")
    problem(api.post("/persona", {"group": "stage", "value": "sleepy"}), 400, "value")
    problem(api.post("/persona", {"group": "tribe"}), 422, "group")
    problem(api.post("/persona", {"dimensions": ["planet"]}), 400, "dimensions")
    problem(api.post("/persona", {"top_events": 1000}), 422, "top_events")
    problem(api.get("/persons/nobody"), 404, "id")
    problem(api.get("/persons/no/body/events"), 404, "id")
    load(runtime, project.project.id)
    someone = next(iter(person_ids(runtime.store, project.project.id)))
    problem(api.get(f"/persons/{someone}/events", cursor="zzz"), 400, "cursor")
    problem(api.get(f"/persons/{someone}/events", limit=0), 422, "limit")

    # auth: no key, unknown key, another project's key naming this project
    assert httpx.get(f"{api.url}/settings").status_code == 401
    assert Client(live, "ysk_wrong").get("/settings").status_code == 401
    other = create_project(runtime.state, "另一个")
    resp = Client(live, other.secret_key).get("/stages", project=project.project.name)
    assert resp.status_code == 403
    # the admin token names the project when there are several
    admin = Client(live, runtime.settings.admin_token_file.read_text().strip())
    assert admin.get("/settings").status_code == 404
    assert ok(admin.get("/settings", project=project.project.name)) == ok(api.get("/settings"))


def cli(data_dir: Path, *args: str) -> Any:
    result = runner.invoke(app, [*args, "--data-dir", str(data_dir), "--json"])
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def test_cli_through_the_server(live: LiveServer, runtime: Runtime, project: NewProject) -> None:
    pid = project.project.id
    load(runtime, pid)
    d = runtime.settings.data_dir
    api = Client(live, project.secret_key)
    at = AS_OF.isoformat()
    assert cli(d, "lifecycle-stages", "--as-of", at) == ok(api.get("/stages", as_of=at))
    weekly = cli(d, "lifecycle-stages", "--over-time", "--interval", "week", "--to", at)
    assert weekly == ok(api.get("/stages/over-time", interval="week", date_to=at))
    moves = cli(d, "lifecycle-stages", "--transitions", "--to", at)
    assert moves == ok(api.get("/stages/transitions", date_to=at))
    assert cli(d, "rfm", "--as-of", at) == ok(api.get("/rfm", as_of=at))
    got = cli(d, "persona", "--stage", "silent", "--to", at, "-p", "plan")
    assert got["group"]["kind"] == "stage" and got["distributions"][0]["field"] == "person.plan"
    assert got == ok(api.post("/persona", {"group": "stage", "value": "silent", "date_to": at,
                                           "properties": ["plan"]}))  # fmt: skip
    who = next(k for k in person_ids(runtime.store, pid) if k.startswith("luser-"))
    prof = cli(d, "profile", who, "--events", "5")
    assert who in prof["distinct_ids"] and len(prof["timeline"]["events"]) <= 5
    changed = cli(d, "audience-settings", "set", "lifecycle.silent_days=9", 'rfm.events=["x"]')
    assert changed["settings"]["lifecycle"]["silent_days"] == 9
    assert changed["settings"]["rfm"]["events"] == ["x"]
    assert cli(d, "audience-settings", "show") == changed
    bad = runner.invoke(app, ["audience-settings", "set", "lifecycle.nap_days=3",
                              "--data-dir", str(d)])  # fmt: skip
    assert bad.exit_code == 1 and "unknown setting" in bad.output
    bad = runner.invoke(app, ["persona", "--data-dir", str(d)])
    assert bad.exit_code == 1 and "exactly one group" in bad.output
    stored = cli(d, "lifecycle-stages", "--as-of", at, "--store")
    assert stored["total"] == ok(api.get("/stages", as_of=at))["total"]


def test_cli_locally(tmp_path: Path) -> None:
    """Without a server the commands open the data dir themselves: same answers."""
    d = tmp_path / "d"
    rt = Runtime.open(load_settings(data_dir=d))
    p = create_project(rt.state, "剪辑App").project
    load(rt, p.id)
    rt.close()
    at = AS_OF.isoformat()
    stages = cli(d, "lifecycle-stages", "--as-of", at)
    rfm = cli(d, "rfm", "--as-of", at)
    persona_json = cli(d, "persona", "--everyone", "--to", at)
    members = cli(d, "lifecycle-stages", "--members", "silent:churned", "--as-of", at,
                  "--interval", "month")  # fmt: skip
    assert (
        cli(d, "audience-settings", "set", "rfm.scoring=fixed")["settings"]["rfm"]["scoring"]
        == "fixed"
    )
    rt = Runtime.open(load_settings(data_dir=d))
    try:
        s = AudienceSettings()
        assert stages == stage_distribution(rt.store, p.id, s, AS_OF, TZ)
        assert rfm == rfm_report(rt.store, p.id, s, AS_OF, TZ)
        q = PersonaQuery("everyone", DateRange(AS_OF - timedelta(days=29), AS_OF, TZ))
        assert persona_json == orjson.loads(orjson.dumps(persona(rt.store, p.id, q, s)))
        assert members["from"] == "silent" and members["label"] == "2024-04-01"
        assert get_settings(rt.state, get_project(rt.state, None).id).rfm.scoring == "fixed"
    finally:
        rt.close()


@pytest.mark.parametrize("args", [["rfm", "--as-of", "2024-13-01"],
                                  ["lifecycle-stages", "--interval", "year"],
                                  ["lifecycle-stages", "--members", "silent"]])  # fmt: skip
def test_cli_usage_errors(tmp_path: Path, args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 1 and "error" in result.output

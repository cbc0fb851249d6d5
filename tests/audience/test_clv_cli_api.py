"""`yunying clv fit|show` and /api/v1/clv: local and through a running server, with the error
shapes of the management API. The CDNOW sample goes in through the real ingestion writer."""

from __future__ import annotations

import httpx
import orjson
from typer.testing import CliRunner

from tests.audience.test_clv import CAL_END, cdnow_purchases, purchase_events
from tests.conftest import LiveServer
from yunying.cli.main import app
from yunying.config import Settings
from yunying.ingest.model import validate_batch
from yunying.runtime import Runtime
from yunying.state import NewProject, create_project


def load_cdnow(runtime: Runtime, project_id: int) -> None:
    batch = validate_batch(purchase_events(cdnow_purchases()))
    assert not batch.errors
    runtime.writer.write(project_id, batch.events)


def cli(settings: Settings, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args, "--data-dir", str(settings.data_dir)])
    return result.exit_code, result.output


def check_published(body: dict[str, object]) -> None:
    bg, gg = body["bgnbd"], body["gamma_gamma"]
    assert isinstance(bg, dict) and isinstance(gg, dict)
    assert [round(bg[k], 3) for k in ("r", "alpha", "a", "b")] == [0.243, 4.414, 0.793, 2.426]
    assert round(bg["log_likelihood"], 1) == -9582.4
    assert [round(gg[k], 2) for k in ("p", "q", "v")] == [6.25, 3.74, 15.44]


def test_cli_fits_locally_and_shows_the_latest(settings: Settings) -> None:
    rt = Runtime.open(settings)
    project = create_project(rt.state, "cdnow", "Asia/Shanghai").project
    load_cdnow(rt, project.id)
    rt.close()  # the CLI opens the installation itself (DuckDB allows one process)

    code, out = cli(
        settings, "clv", "fit", "--event", "purchase", "--calibration-end", CAL_END.isoformat(),
        "--unit", "week", "--horizon", "39", "--json",
    )  # fmt: skip
    assert code == 0, out
    fitted = orjson.loads(out)
    check_published(fitted)
    assert fitted["counts"]["customers"] == 2357 and fitted["horizon"] == 39

    code, out = cli(settings, "clv", "show", "--json")
    assert code == 0, out
    assert orjson.loads(out) == fitted

    code, out = cli(settings, "clv", "show")  # tables
    assert code == 0 and "0.2426" in out and "15.4435" in out

    code, out = cli(
        settings, "clv", "fit", "--event", "purchase", "--calibration-end", "2025-13-01"
    )
    assert code == 1 and "calibration_end" in out
    code, out = cli(settings, "clv", "fit", "--event", "refund", "--calibration-end", "2025-09-30")
    assert code == 1 and "no customers" in out


def test_api_fit_and_latest(live: LiveServer, project: NewProject) -> None:
    load_cdnow(live.runtime, project.project.id)
    url = f"{live.url}/api/v1/clv"
    auth = {"Authorization": f"Bearer {project.secret_key}"}

    assert httpx.post(f"{url}/fit", json={"event": "purchase"}).status_code == 401
    missing = httpx.get(f"{url}/models/latest", headers=auth)
    assert missing.status_code == 404 and "yunying clv fit" in missing.json()["error"]

    bad = httpx.post(
        f"{url}/fit", json={"event": "purchase", "calibration_end": "2025-09-30", "unit": "year"},
        headers=auth,
    )  # fmt: skip
    assert bad.status_code == 422 and bad.json()["field"] == "unit"
    bad = httpx.post(f"{url}/fit", json={"event": "purchase"}, headers=auth)
    assert bad.status_code == 422 and bad.json()["field"] == "calibration_end"
    bad = httpx.post(
        f"{url}/fit",
        json={"event": "purchase", "calibration_end": "2025-09-30", "amount_field": "prop:"},
        headers=auth,
    )
    assert bad.status_code == 422 and bad.json()["field"] == "amount_field"
    bad = httpx.post(
        f"{url}/fit", json={"event": "purchase", "calibration_end": "2025-09-30", "horizon": -1},
        headers=auth,
    )  # fmt: skip
    assert bad.status_code == 422 and bad.json()["field"] == "horizon"
    bad = httpx.post(
        f"{url}/fit", json={"event": "purchase", "calibration_end": "2099-01-01"}, headers=auth
    )
    assert bad.status_code == 422 and bad.json()["field"] == "calibration_end"
    bad = httpx.post(f"{url}/fit", content=b"{not json", headers=auth)
    assert bad.status_code == 400
    bad = httpx.post(
        f"{url}/fit", json={"event": "refund", "calibration_end": "2025-09-30"}, headers=auth
    )
    assert bad.status_code == 400 and "no customers" in bad.json()["error"]
    other = httpx.post(
        f"{url}/fit",
        json={"project": "another", "event": "purchase", "calibration_end": "2025-09-30"},
        headers=auth,
    )
    assert other.status_code == 403

    fit = httpx.post(
        f"{url}/fit",
        json={"event": "purchase", "calibration_end": CAL_END.isoformat(), "unit": "week"},
        headers=auth,
        timeout=120,
    )
    assert fit.status_code == 200, fit.text
    check_published(fit.json())
    latest = httpx.get(f"{url}/models/latest", params={"event": "purchase"}, headers=auth)
    assert latest.status_code == 200 and latest.json() == fit.json()

    # the CLI finds the running server (it holds the DuckDB lock) and asks it
    code, out = cli(live.runtime.settings, "clv", "show", "--json")
    assert code == 0, out
    assert orjson.loads(out) == fit.json()

"""Budget rules: operators start activities only within the limit an admin set.

Runs its own demo installation (module fixtures), so the rule set here cannot touch the other
console tests. Everything goes through the real server: the admin sets the limit on the project
page, the operator creates and starts activities, the admin starts what the operator may not.
"""

from __future__ import annotations

import re

import httpx

from tests.conftest import LiveServer
from tests.console.conftest import csrf_of, login
from yunying.console.budget import parse_limit

GIFT = """template: gift
name: {name}
event: sign_up
reward: {{kind: membership_days, amount: 15}}
budget: {{total_fen: {total}}}
"""


def _set_limit(admin: httpx.Client, value: str) -> httpx.Response:
    token = csrf_of(admin.get("/settings/project").text)
    return admin.post(
        "/settings/project/budget", data={"csrf_token": token, "operator_limit": value}
    )


def _create(client: httpx.Client, name: str, total: int, action: str) -> httpx.Response:
    token = csrf_of(client.get("/activities/new?template=gift").text)
    spec = GIFT.format(name=name, total=total)
    return client.post(
        "/activities/new",
        data={"csrf_token": token, "template": "gift", "spec": spec, "action": action},
    )


def _start(client: httpx.Client, activity: str) -> httpx.Response:
    token = csrf_of(client.get(activity).text)
    return client.post(f"{activity}/state", data={"csrf_token": token, "action": "start"})


def test_limits_parse_as_yuan() -> None:
    assert parse_limit("5,000.5") == 500050
    assert parse_limit(" ¥12 ") == 1200
    assert parse_limit("") is None


def test_operators_start_only_within_the_limit(console_live: LiveServer) -> None:
    admin, operator = login(console_live.url, "admin"), login(console_live.url, "operator")
    # no rule: an operator starts anything
    r = _create(operator, "free", 900_000, "start")
    assert r.status_code == 303

    bad = _set_limit(admin, "lots")
    assert bad.status_code == 400 and 'data-field-error="operator_limit"' in bad.text
    assert _set_limit(admin, "5,000").status_code == 303
    assert 'data-operator-limit="500000"' in admin.get("/settings/project").text
    # operators cannot change it (the project page is the director's)
    token = csrf_of(operator.get("/activities/new").text)
    forged = operator.post(
        "/settings/project/budget", data={"csrf_token": token, "operator_limit": "1"}
    )
    assert forged.status_code == 403
    assert 'data-operator-limit="500000"' in admin.get("/settings/project").text

    within = _create(operator, "within", 500_000, "start")
    assert within.status_code == 303
    assert 'data-state-label="running"' in operator.get(within.headers["location"]).text

    above = _create(operator, "above", 500_001, "start")
    assert above.status_code == 403
    assert "budget.total_fen" in above.text and "5,000.00" in above.text
    draft = _create(operator, "above", 500_001, "save")  # a draft is fine ...
    assert draft.status_code == 303
    activity = draft.headers["location"]
    refused = _start(operator, activity)  # ... starting it is not
    assert refused.status_code == 303 and refused.headers["location"].endswith("error=budget")
    page = operator.get(refused.headers["location"]).text
    assert 'data-error="budget"' in page and 'data-state-label="draft"' in page
    assert _start(admin, activity).status_code == 303  # the director may
    assert 'data-state-label="running"' in admin.get(activity).text

    assert _set_limit(admin, "").status_code == 303  # lifted
    assert 'data-operator-limit=""' in admin.get("/settings/project").text
    assert _create(operator, "after", 900_000, "start").status_code == 303
    assert re.search(r"/activities/\d+$", activity)

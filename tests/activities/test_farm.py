"""A bonus-hunter farm next to honest users in one referral activity, end to end over HTTP.

The farm: one fresh inviter, eight invitees on two phones behind one /24, each doing nothing but
accepting the invite and the qualifying export. Honest users: six inviters first seen ten days
ago, each with one invitee on its own phone and network who edits and browses before exporting.
Every claim goes through anti-fraud with the default policy; the test prints precision and
recall of "held or denied" as a farm detector (also in docs/activities.md).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.activities.conftest import App


def test_farm_claims_held_or_denied_honest_granted(app: App) -> None:
    act = app.create(
        {
            "template": "referral",
            "name": "邀请好友得 30 元",
            "activation_event": "export_video",
            "inviter_reward": {"kind": "cash", "amount": 3000},
            "invitee_reward": {"kind": "membership_days", "amount": 7},
            "risk": {},
        }
    )
    aid = act["id"]
    old = (datetime.now(UTC) - timedelta(days=10)).isoformat()

    def on(user: str, name: str, device: str, ip: str, **props: object) -> dict[str, object]:
        return app.event(user, name, **{"$device_id": device, "$ip": ip, **props})

    honest = [f"h{i}" for i in range(6)]
    app.events(
        [
            on(h, "app_install", f"hd{i}", f"100.64.{i}.10") | {"timestamp": old}
            for i, h in enumerate(honest)
        ]
    )
    codes = {
        u: app.as_user(u, "GET", f"/v1/activities/{aid}/invite-code").json()["code"]
        for u in [*honest, "farmer"]
    }
    app.events([on("farmer", "app_install", "dev-A", "10.9.9.1")])
    batch = []
    for i, h in enumerate(honest):
        friend, dev, ip = f"{h}-friend", f"hf{i}", f"100.65.{i}.20"
        batch.append(on(friend, "invite_accepted", dev, ip, invite_code=codes[h]))
        batch += [on(friend, n, dev, ip) for n in ("edit_video", "edit_video", "view_content")]
        batch.append(on(friend, "export_video", dev, ip))
    app.events(batch)
    farm = [f"f{i}" for i in range(8)]
    batch = []
    for i, f in enumerate(farm):
        dev, ip = ("dev-A", "dev-B")[i % 2], f"10.9.9.{1 + i % 3}"
        batch.append(on(f, "invite_accepted", dev, ip, invite_code=codes["farmer"]))
        batch.append(on(f, "export_video", dev, ip))
    app.events(batch)
    claims = app.manage("GET", f"/api/v1/activities/{aid}/claims").json()["claims"]
    farm_users = {"farmer", *farm}
    flagged = {c["claim_id"] for c in claims if c["status"] in ("held", "denied")}
    is_farm = {c["claim_id"] for c in claims if c["user_id"] in farm_users}
    true_pos = len(flagged & is_farm)
    precision = true_pos / len(flagged) if flagged else 1.0
    recall = true_pos / len(is_farm)
    print(
        f"\nfarm detection: {len(claims)} claims, {len(is_farm)} from the farm, "
        f"{len(flagged)} held/denied; precision {precision:.2f}, recall {recall:.2f}"
    )
    assert len(claims) == 2 * (len(honest) + len(farm))
    honest_status = {c["status"] for c in claims if c["user_id"] not in farm_users}
    assert honest_status == {"granted"}, [c for c in claims if c["user_id"] not in farm_users]
    assert precision == 1.0
    assert recall >= 0.75
    assert app.as_user("h0", "GET", "/v1/rewards").json()["cash_fen"] == 3000

"""Anti-fraud reasons in the reader's language.

Claims and reviews store each reason as ``{"code", "message", "value", "threshold"}`` with an
English sentence written when the claim was assessed (what the HTTP API returns). The console
shows a sentence from its catalog chosen by the reason's stable *code*, filled with the measured
value and the limit — so reasons stored before a translation existed read right too; the stored
English sentence (which also names the device, IP or invitee) stays available as a tooltip.
"""

from __future__ import annotations

from typing import Any

from yunying.console.data import N_
from yunying.console.web import Ctx

#: Sentences per reason code (``{value}`` and ``{threshold}`` are filled in when known).
REASONS = {
    "account_too_new": N_("Account first seen {value} minutes before claiming (minimum {threshold})"),
    "invite_cycle": N_("Invites run in a circle ({value} steps)"),
    "invitee_passive": N_("The invitee did nothing besides signing up ({value} other events; needs {threshold})"),
    "invite_chain": N_("On a chain of {value} invites whose invitees did nothing else (fires at {threshold})"),
    "invite_burst": N_("The inviter brought {value} invitees in a short time (limit {threshold})"),
    "device_shared": N_("The device was used by {value} accounts (limit {threshold})"),
    "ip_shared": N_("The IP address was used by {value} accounts (limit {threshold})"),
    "subnet_shared": N_("The subnet was used by {value} accounts (limit {threshold})"),
    "inactive": N_("The activity was not running"),
    "review": N_("Denied by a reviewer"),
}  # fmt: skip
#: Families of codes with a suffix (``blocklisted_ip``, ``budget_total``...).
PREFIXES = {
    "blocklisted_": N_("On the blocklist ({what})"),
    "budget_": N_("The budget is exhausted ({what})"),
}


def reason_text(ctx: Ctx, reason: Any) -> str:
    """One reason (a ``RiskReason`` or its stored dict) as a sentence in the page's language."""
    get = reason.get if isinstance(reason, dict) else lambda k: getattr(reason, k, None)
    code = str(get("code") or "")
    stored = str(get("message") or code)
    if ctx.locale == "en":
        return stored  # the source language, with the names the stored sentence holds
    if code in REASONS:
        value, threshold = get("value"), get("threshold")
        try:
            return ctx.gettext(REASONS[code]).format(
                value="?" if value is None else ctx.fmt.number(value, 0),
                threshold="?" if threshold is None else ctx.fmt.number(threshold, 0),
            )
        except (KeyError, IndexError, ValueError):
            return stored
    for prefix, template in PREFIXES.items():
        if code.startswith(prefix):
            return ctx.gettext(template).format(what=code.removeprefix(prefix))
    return stored

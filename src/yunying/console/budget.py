"""Budget rules (预算规则): how much an operator may commit without the director.

An admin sets, per project, the largest total money budget an operator may start (or resume) an
activity with. Above it -- or when the activity has no money cap at all -- the activity waits for
an admin to start it; operators still write and save drafts. No limit set means no rule. The
management API (secret key) is the director's own tool and is not limited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from yunying.console.tables import console_budget_rules
from yunying.errors import M_, YunyingError

#: Transitions that commit budget.
COMMITTING = ("start", "resume")


class OverBudgetRule(YunyingError):
    """An operator asked to start an activity whose budget needs an admin."""


class InvalidLimit(YunyingError):
    """The limit typed in the settings form is not an amount of money."""


@dataclass(frozen=True)
class BudgetRule:
    """The operator limit of a project (fen), ``None`` when there is no rule."""

    operator_limit_fen: int | None
    updated_by: str | None = None
    updated_at: datetime | None = None


def budget_rule(state: Engine, project_id: int) -> BudgetRule:
    """The project's rule (no row: no rule)."""
    with state.connect() as conn:
        row = conn.execute(
            sa.select(console_budget_rules).where(console_budget_rules.c.project_id == project_id)
        ).first()
    if row is None:
        return BudgetRule(None)
    return BudgetRule(row.operator_limit_fen, row.updated_by, row.updated_at)


def set_budget_rule(state: Engine, project_id: int, limit_fen: int | None, by: str) -> None:
    """Set (or, with ``None``, lift) the project's operator limit."""
    values = {
        "operator_limit_fen": limit_fen,
        "updated_by": by,
        "updated_at": datetime.now(UTC),
    }
    with state.begin() as conn:
        updated = conn.execute(
            sa.update(console_budget_rules)
            .where(console_budget_rules.c.project_id == project_id)
            .values(**values)
        ).rowcount
        if not updated:
            conn.execute(sa.insert(console_budget_rules).values(project_id=project_id, **values))


def parse_limit(text: str) -> int | None:
    """Yuan as typed (``5000``, ``5,000.50``) to fen; blank lifts the rule."""
    cleaned = text.strip().replace(",", "").replace("¥", "").replace("￥", "")
    if not cleaned:
        return None
    try:
        yuan = float(cleaned)
    except ValueError:
        yuan = -1.0
    if not 0 <= yuan <= 1e12:  # NaN fails too
        raise InvalidLimit(M_("the limit must be an amount in yuan, or blank for no limit"))
    return round(yuan * 100)


def check_commit(rule: BudgetRule, spec: Any, may_exceed: bool) -> None:
    """Refuse (``OverBudgetRule``) to start an activity past the rule, unless ``may_exceed``
    (the role holds the ``budgets`` permission)."""
    limit = rule.operator_limit_fen
    if may_exceed or limit is None:
        return
    total = spec.budget.total_fen
    if total is None:
        raise OverBudgetRule(
            M_(
                "this activity has no total money budget; with the operator limit of "
                "¥{limit} an admin must start it",
                limit=f"{limit / 100:,.2f}",
            )
        )
    if total > limit:
        raise OverBudgetRule(
            M_(
                "the total budget ¥{total} is above the operator limit of ¥{limit}; an admin "
                "must start it",
                total=f"{total / 100:,.2f}",
                limit=f"{limit / 100:,.2f}",
            )
        )

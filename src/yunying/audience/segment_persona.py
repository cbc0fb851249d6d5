"""A segment's persona, computed with each computation of the segment and stored with it.

The persona query reads every event of the project (first channel, latest OS, device and city
of every person), about half a second on the demo data: too slow to run each time a segment's
page opens. A segment's members are those of its latest computation, so its persona is taken
at the same moment: over the :data:`PERSONA_DAYS` local days ending on the day of that
computation, with the audience settings of then. The page reads the stored report; a
computation without one (made before this table existed, or whose persona failed) gets it on
first use.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from yunying.analytics.common import DateRange
from yunying.audience.definitions import aware
from yunying.audience.persona import PersonaQuery, default_range, personas
from yunying.audience.segment_tables import segment_personas
from yunying.audience.settings import get_settings
from yunying.runtime import Runtime
from yunying.state import Project

log = logging.getLogger("yunying.audience")

#: Local days the stored persona covers, ending on the day of the computation.
PERSONA_DAYS = 30


def persona_range(project: Project, computed_at: datetime) -> DateRange:
    """The persona window of a computation made at ``computed_at``."""
    day = aware(computed_at).astimezone(ZoneInfo(project.timezone)).date()
    return default_range(day, project.timezone, PERSONA_DAYS)


def store_personas(
    runtime: Runtime, project: Project, seg_ids: list[int], computed_at: datetime
) -> list[dict[str, Any]]:
    """Compute the personas of the computations of segments ``seg_ids`` made together at
    ``computed_at`` (one facts query and one events query for all of them) and store each in
    place of the previous one; the reports."""
    window = persona_range(project, computed_at)
    qs = [PersonaQuery("segment", window, str(seg_id)) for seg_id in seg_ids]
    started = time.perf_counter()
    reports = personas(runtime.store, project.id, qs, get_settings(runtime.state, project.id))
    seconds = time.perf_counter() - started
    for seg_id, report in zip(seg_ids, reports, strict=True):
        try:
            with runtime.state.begin() as conn:
                conn.execute(
                    segment_personas.delete().where(segment_personas.c.segment_id == seg_id)
                )
                conn.execute(
                    segment_personas.insert().values(
                        segment_id=seg_id, computed_for=computed_at, report=report, seconds=seconds
                    )
                )
        except sa.exc.IntegrityError:  # stored at the same time by another process (or deleted)
            log.info("the persona of segment %s was stored by another writer", seg_id)
    return reports


def store_personas_quietly(
    runtime: Runtime, project: Project, seg_ids: list[int], computed_at: datetime
) -> None:
    """:func:`store_personas` after a computation: a failure is logged, not raised (the members
    are stored; the page computes a persona when it is first asked for)."""
    if not seg_ids:
        return
    try:
        store_personas(runtime, project, seg_ids, computed_at)
    except Exception as exc:  # noqa: BLE001 - the segments themselves were computed
        log.warning("the personas of segments %s were not stored: %s", seg_ids, exc)


def stored_persona(engine: sa.Engine, seg_id: int, computed_at: datetime) -> dict[str, Any] | None:
    """The stored persona of the computation at ``computed_at``, or None (none stored, or one of
    an earlier computation)."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(segment_personas.c.computed_for, segment_personas.c.report).where(
                segment_personas.c.segment_id == seg_id
            )
        ).first()
    if row is None or aware(row.computed_for) != aware(computed_at):
        return None
    report: dict[str, Any] = row.report
    return report


def segment_persona(
    runtime: Runtime, project: Project, seg_id: int, computed_at: datetime
) -> dict[str, Any]:
    """The persona of the computation of ``seg_id`` at ``computed_at``: the stored one, else
    computed now and stored."""
    got = stored_persona(runtime.state, seg_id, computed_at)
    return got if got is not None else store_personas(runtime, project, [seg_id], computed_at)[0]

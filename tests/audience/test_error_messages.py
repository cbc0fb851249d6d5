"""A failed computation keeps its message's template beside the English text: the API and the
CLI read the English as before, the console shows it in the reader's language."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tests.audience.conftest import fresh
from yunying.audience import definitions
from yunying.audience import segments as S
from yunying.audience import tags as T
from yunying.audience.rules import InvalidRule
from yunying.console.i18n import translate
from yunying.errors import M_, Message, message_from_record, message_record
from yunying.state import get_project

EDITORS = {"type": "event", "event": "edit_video", "times": 1, "window": {"last_days": 30}}
ZH = {
    "give either last_days or from/to/after/before, not both": "last_days 与 from/to/after/before 只能二选一",
    "at most {n} in {where}": "{where}中至多 {n} 个",
    "the rule list": "规则列表",
}


def test_a_message_survives_its_record() -> None:
    inner = M_("the rule list")
    message = M_("at most {n} in {where}", n=3, where=inner)
    record = message_record(message)
    assert record is not None and record["text"] == "at most 3 in the rule list"
    back = message_from_record(record, None)
    assert isinstance(back, Message) and str(back) == str(message)
    assert translate(back, lambda s: ZH.get(s, s)) == "规则列表中至多 3 个"
    # unmarked text stays as it is
    assert message_record("plain") is None
    assert message_from_record(None, "plain") == "plain"


def test_a_failure_keeps_its_template(tmp_path: Path) -> None:
    rt, pid = fresh(tmp_path)
    project = get_project(rt.state)
    seg = S.create_segment(rt, project, "editors", rules=EDITORS)
    tag = T.create_tag(rt.state, project, "heavy", EDITORS)
    failure = definitions.failure(
        InvalidRule(M_("give either last_days or from/to/after/before, not both"))
    )
    assert failure == "InvalidRule: give either last_days or from/to/after/before, not both"
    at = datetime.now(UTC)
    S._record(rt.state, seg.id, at, None, failure)
    T.record_tag(rt.state, tag.id, at, None, failure)
    for stored in (S.get_segment(rt.state, pid, seg.id).last_error,
                   T.get_tag(rt.state, pid, tag.id).last_error):  # fmt: skip
        assert stored == failure  # the English text, as the API and CLI show it
        assert (
            translate(stored, lambda s: ZH.get(s, s))
            == ZH["give either last_days or from/to/after/before, not both"]
        )
    assert S.get_segment(rt.state, pid, seg.id).as_dict()["last_error"] == failure
    # an engine's own error text has no template: shown as it is
    S._record(rt.state, seg.id, at, None, definitions.failure(RuntimeError("disk full")))
    assert translate(S.get_segment(rt.state, pid, seg.id).last_error, str.upper) == (
        "RuntimeError: disk full"
    )
    # a success clears both
    S._record(rt.state, seg.id, at, 0, None)
    assert S.get_segment(rt.state, pid, seg.id).last_error is None
    rt.close()

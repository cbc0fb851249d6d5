"""Invite-graph shapes on plain edge lists: cycles, passive chains, bursts, the neighbourhood."""

from __future__ import annotations

from datetime import timedelta

from yunying.risk import InviteEdge
from yunying.risk.graph import InviteIndex

from .helpers import NOW


def graph(*pairs: tuple[str, str], minutes: list[int] | None = None) -> InviteIndex:
    times = minutes or [0] * len(pairs)
    return InviteIndex(
        [
            InviteEdge(a, b, NOW + timedelta(minutes=m))
            for (a, b), m in zip(pairs, times, strict=True)
        ]
    )


def test_cycles() -> None:
    g = graph(("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"))
    assert g.cycle_through("a") == ["a", "b", "c", "a"]
    assert g.cycle_through("b") == ["b", "c", "a", "b"]
    assert g.cycle_through("d") is None
    assert graph(("x", "x")).cycle_through("x") == ["x", "x"]
    assert graph(("a", "b"), ("b", "c")).cycle_through("a") is None


def test_passive_chain_counts_up_and_down_and_stops_at_active() -> None:
    g = graph(("root", "a"), ("a", "b"), ("b", "c"), ("c", "d"), ("b", "x"))
    passive = {"a", "b", "c", "d"}.__contains__
    assert g.passive_chain("b", passive, 10) == 4  # root→a→b up, b→c→d down
    assert g.passive_chain("d", passive, 10) == 4
    assert g.passive_chain("b", passive, 2) == 4  # at most the limit each way
    only_a = {"a"}.__contains__
    assert g.passive_chain("a", only_a, 10) == 1
    # a cycle does not loop
    ring = graph(("a", "b"), ("b", "c"), ("c", "a"))
    assert ring.passive_chain("a", lambda _p: True, 10) == 2


def test_burst_is_the_densest_window() -> None:
    g = graph(*[("kol", f"f{i}") for i in range(6)], minutes=[0, 10, 200, 201, 202, 260])
    assert g.largest_burst("kol", timedelta(hours=1)) == 4
    assert g.largest_burst("kol", timedelta(minutes=1)) == 2
    assert g.largest_burst("nobody", timedelta(hours=1)) == 0


def test_neighbourhood_is_nearest_first_and_capped() -> None:
    g = graph(("up", "me"), *[("me", f"f{i}") for i in range(50)], ("f0", "ff"))
    near = g.neighbourhood(["me"], 2)
    assert {"up", "me", "ff", "f49"} <= near and len(near) == 53
    capped = g.neighbourhood(["me"], 2, limit=10)
    assert len(capped) == 10 and "up" in capped  # the inviter comes before the invitees

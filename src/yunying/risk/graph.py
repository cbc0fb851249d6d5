"""Invite-graph shapes that bonus-hunter farms leave: cycles, chains of passive invitees, bursts.

Pure functions over :class:`~yunying.risk.model.InviteEdge` lists, so they are tested on plain
edge lists; :mod:`yunying.risk.engine` feeds them the activity's graph and invitee activity.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from datetime import timedelta

from yunying.risk.model import InviteEdge

#: Persons visited per question at most (a farm ring is tens to hundreds of accounts).
MAX_VISIT = 10_000


class InviteIndex:
    """Adjacency of an invite graph: who invited whom."""

    def __init__(self, edges: Sequence[InviteEdge]) -> None:
        self.edges = list(edges)
        self.invitees: dict[str, list[InviteEdge]] = defaultdict(list)
        self.inviters: dict[str, list[InviteEdge]] = defaultdict(list)
        for e in self.edges:
            self.invitees[e.inviter_person_id].append(e)
            self.inviters[e.invitee_person_id].append(e)

    def cycle_through(self, person: str) -> list[str] | None:
        """A cycle of invites that returns to ``person`` (``[person, ..., person]``), or None."""
        parent: dict[str, str] = {}
        queue: deque[str] = deque([person])
        seen = {person}
        while queue and len(seen) < MAX_VISIT:
            node = queue.popleft()
            for e in self.invitees.get(node, ()):
                nxt = e.invitee_person_id
                if nxt == person:
                    path = [node]
                    while path[-1] != person:
                        path.append(parent[path[-1]])
                    return [*reversed(path), person]
                if nxt not in seen:
                    seen.add(nxt)
                    parent[nxt] = node
                    queue.append(nxt)
        return None

    def neighbourhood(self, persons: Sequence[str], depth: int, limit: int = 500) -> set[str]:
        """Persons within ``depth`` invite edges (either direction) of ``persons``, nearest
        first, at most ``limit`` of them (a star inviter's thousands of invitees are cut)."""
        out = dict.fromkeys(persons)
        frontier = list(out)
        for _ in range(depth):
            nxt: list[str] = []
            for p in frontier:
                near = [e.inviter_person_id for e in self.inviters.get(p, ())]
                near += [e.invitee_person_id for e in self.invitees.get(p, ())]
                for q in near:
                    if q not in out:
                        out[q] = None
                        nxt.append(q)
                        if len(out) >= limit:
                            return set(out)
            frontier = nxt
            if not frontier:
                break
        return set(out)

    def passive_chain(self, person: str, passive: Callable[[str], bool], limit: int) -> int:
        """Edges in the longest chain through ``person`` whose invitees are all passive.

        Upwards: ``person`` passive counts its inviter's edge, and so on while inviters are
        passive too; downwards: the deepest path of passive invitees. Stops counting at
        ``limit`` each way (enough to compare with a threshold) and never loops on cycles.
        """
        up = 0
        node = person
        seen = {person}
        while up < limit and passive(node) and self.inviters.get(node):
            node = self.inviters[node][0].inviter_person_id
            if node in seen:
                break
            up += 1
            seen.add(node)

        def down(node: str, depth: int, path: set[str]) -> int:
            if depth >= limit:
                return 0
            best = 0
            for e in self.invitees.get(node, ()):
                child = e.invitee_person_id
                if child in path or not passive(child):
                    continue
                best = max(best, 1 + down(child, depth + 1, path | {child}))
                if best >= limit - depth:
                    break
            return best

        return up + down(person, 0, seen)

    def largest_burst(self, inviter: str, window: timedelta) -> int:
        """Most invitees of ``inviter`` created within any ``window``."""
        times = sorted(e.created_at for e in self.invitees.get(inviter, ()))
        best = 0
        start = 0
        for end, t in enumerate(times):
            while t - times[start] > window:
                start += 1
            best = max(best, end - start + 1)
        return best

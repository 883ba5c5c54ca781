"""Static activation-arena planning: buffers whose lifetimes overlap never share bytes, but for the ties a kernel
allows: an output placed over an input that its step reads for the last time, in an order that reads each input
value before the output's writes reach it (see in_place_ties in model.py and the kernels in tr_kernels.h)."""

from __future__ import annotations

from dataclasses import dataclass

ALIGNMENT = 16


@dataclass
class Buffer:
    key: int  # tensor index
    size: int  # bytes
    first: int  # first schedule step that writes or reads it
    last: int  # last schedule step that reads it


@dataclass(frozen=True)
class Tie:
    """The input buffer `inside` lies `shift` bytes after the start of the output buffer `output` (shift >= 0, a
    multiple of ALIGNMENT): the one step that reads the one and writes the other may overlap them."""

    output: int
    inside: int
    shift: int


def _align(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def _clash(a: Buffer, a_at: int, b: Buffer, b_at: int) -> bool:
    """Whether two buffers at these offsets share bytes while both are live."""
    return a.first <= b.last and b.first <= a.last and a_at < b_at + _align(b.size) and b_at < a_at + _align(a.size)


def _clusters(buffers: list[Buffer], ties: list[Tie]) -> list[dict[int, int]]:
    """The buffers in groups of fixed relative offsets (key -> offset from the group's start): each tie joins two
    groups, unless it would make two buffers clash other than the tied pair, then it is dropped."""
    by_key = {b.key: b for b in buffers}
    group_of = {b.key: {b.key: 0} for b in buffers}
    for tie in ties:
        a, b = group_of.get(tie.output), group_of.get(tie.inside)
        if a is None or b is None or a is b:
            continue
        move = a[tie.output] + tie.shift - b[tie.inside]
        pairs = ((m, n) for m in a for n in b if {m, n} != {tie.output, tie.inside})
        if any(_clash(by_key[m], a[m], by_key[n], b[n] + move) for m, n in pairs):
            continue
        a.update({k: at + move for k, at in b.items()})
        for k in b:
            group_of[k] = a
    groups = list({id(g): g for g in group_of.values()}.values())
    return [{k: at - min(g.values()) for k, at in g.items()} for g in groups]


def _place(groups: list[dict[int, int]], by_key: dict[int, Buffer]) -> dict[int, int]:
    """Each group in turn at the lowest offset where none of its buffers shares bytes with a placed one while both
    are live (the lowest such offset is 0 or where a placed buffer ends)."""
    placed: list[tuple[int, Buffer]] = []
    offsets: dict[int, int] = {}
    for group in groups:
        members = [(by_key[k], at) for k, at in group.items()]
        live = [(off, p) for off, p in placed if any(p.first <= m.last and m.first <= p.last for m, _ in members)]
        starts = sorted({0} | {off + _align(p.size) - at for off, p in live for _, at in members})
        base = next(
            s for s in starts if s >= 0 and not any(_clash(m, s + at, p, off) for m, at in members for off, p in live)
        )
        for m, at in members:
            offsets[m.key] = base + at
            placed.append((base + at, m))
    return offsets


def plan_arena(buffers: list[Buffer], ties: list[Tie] = ()) -> tuple[int, dict[int, int]]:
    """Greedy: the groups of tied buffers placed one by one (_place) in three orders, largest first, earliest first,
    and largest size times lifetime first; the smallest arena wins (none is best for every model: the earliest
    first lets an input sit above a layer's output, which MobileNet's first layers need).

    Returns the arena size and each buffer's offset."""
    by_key = {b.key: b for b in buffers}
    groups = _clusters(buffers, list(ties))

    def extent(g: dict[int, int]) -> int:
        return max(at + by_key[k].size for k, at in g.items())

    def first(g: dict[int, int]) -> int:
        return min(by_key[k].first for k in g)

    def lifetime(g: dict[int, int]) -> int:
        return max(by_key[k].last for k in g) - first(g) + 1

    orders = (
        lambda g: (-extent(g), first(g), min(g)),
        lambda g: (first(g), -extent(g), min(g)),
        lambda g: (-extent(g) * lifetime(g), first(g), min(g)),
    )
    best: tuple[int, dict[int, int]] | None = None
    for order in orders:
        offsets = _place(sorted(groups, key=order), by_key)
        size = max((offsets[b.key] + _align(b.size) for b in buffers), default=0)
        if best is None or size < best[0]:
            best = size, offsets
    return best if best is not None else (0, {})

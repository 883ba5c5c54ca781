"""Static activation-arena planning: buffers whose lifetimes overlap never share bytes."""

from __future__ import annotations

from dataclasses import dataclass

ALIGNMENT = 16


@dataclass
class Buffer:
    key: int  # tensor index
    size: int  # bytes
    first: int  # first schedule step that writes or reads it
    last: int  # last schedule step that reads it


def _align(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def plan_arena(buffers: list[Buffer]) -> tuple[int, dict[int, int]]:
    """Greedy by size, largest first, each at the lowest offset free over its whole lifetime.

    Returns the arena size and each buffer's offset."""
    placed: list[tuple[int, Buffer]] = []
    offsets: dict[int, int] = {}
    for buf in sorted(buffers, key=lambda b: (-b.size, b.first, b.key)):
        busy = sorted(
            (off, off + _align(other.size))
            for off, other in placed
            if other.first <= buf.last and buf.first <= other.last
        )
        offset = 0
        for start, end in busy:
            if offset + buf.size <= start:
                break
            offset = max(offset, end)
        offsets[buf.key] = offset
        placed.append((offset, buf))
    size = max((off + _align(b.size) for off, b in placed), default=0)
    return size, offsets

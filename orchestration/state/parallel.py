"""Work over many independent items at once: the git processes, database files and hashes of
a backup, most of whose time is spent waiting on a process or in C code that lets go of the
GIL."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def workers() -> int:
    """Threads to use: two per core (a git process starting while another runs), at most 8."""
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


def each(action: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """`action` of every item, in the items' order, run in a few threads; the first failure is
    raised (after the others in flight end)."""
    items = list(items)
    if len(items) < 2:
        return [action(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers(), len(items))) as pool:
        return list(pool.map(action, items))


def each_by(action: Callable[[T], R], items: Iterable[T]) -> dict[T, R]:
    """`each`, as a mapping of every item to what `action` gave for it, in the items' order."""
    items = list(items)
    return dict(zip(items, each(action, items), strict=True))

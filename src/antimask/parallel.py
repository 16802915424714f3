"""Work submitted ahead to a thread or process pool, its results taken back in the order it was submitted."""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


def in_order(submit: Callable[[T], object], items: Iterable[T], depth: int) -> Iterator[tuple[T, object]]:
    """(item, result of ``submit(item)``'s future) for each item in order, with up to ``depth`` more submitted
    ahead: the pool works on the next items while the caller uses this one, and no more than that waits in memory."""
    pending: deque = deque()
    for item in items:
        pending.append((item, submit(item)))
        if len(pending) > depth:
            first, future = pending.popleft()
            yield first, future.result()
    while pending:
        first, future = pending.popleft()
        yield first, future.result()

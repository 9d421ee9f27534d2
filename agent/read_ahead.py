"""Produce an iterator's items in a worker thread, a bounded number ahead of the consumer.

The FHIR pull spends its time waiting on the server and parsing JSON while the run's thread scores
(torch releases the GIL); reading ahead overlaps the two. The consumer sees the same items, in the
same order, and the producer's exception at the point where it was raised.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from queue import Empty, Full, Queue
from typing import TypeVar

T = TypeVar("T")

_POLL_S = 0.1


class _End:
    """The producer ran out of items."""


class _Raised:
    """The producer raised ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def read_ahead(items: Iterable[T], *, depth: int, name: str = "read-ahead") -> Iterator[T]:
    """``items``, read by a worker thread at most ``depth`` items ahead.

    Closing the returned generator (or leaving the consumer's loop early) stops the worker and closes
    ``items`` in the worker's thread, where it runs.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    queue: Queue[T | _End | _Raised] = Queue(maxsize=depth)
    stop = threading.Event()
    worker = threading.Thread(target=_produce, args=(items, queue, stop), name=name, daemon=True)
    worker.start()
    try:
        while True:
            item = _take(queue, worker)
            if isinstance(item, _End):
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join()


def _produce(items: Iterable[T], queue: Queue[T | _End | _Raised], stop: threading.Event) -> None:
    iterator = iter(items)
    try:
        for item in iterator:
            if not _put(queue, item, stop):
                return
        _put(queue, _End(), stop)
    except BaseException as error:  # handed to the consumer, raised there
        _put(queue, _Raised(error), stop)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def _put(queue: Queue[T | _End | _Raised], item: T | _End | _Raised, stop: threading.Event) -> bool:
    """Put ``item`` unless the consumer has gone; whether it was put."""
    while not stop.is_set():
        try:
            queue.put(item, timeout=_POLL_S)
            return True
        except Full:
            continue
    return False


def _take(queue: Queue[T | _End | _Raised], worker: threading.Thread) -> T | _End | _Raised:
    while True:
        try:
            return queue.get(timeout=_POLL_S)
        except Empty:
            if not worker.is_alive() and queue.empty():
                return _Raised(RuntimeError(f"{worker.name} stopped without saying why"))

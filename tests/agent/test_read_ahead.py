"""Reading ahead in a worker thread changes when items are produced, never what the consumer sees."""

import threading
from collections.abc import Iterator

import pytest

from agent.read_ahead import read_ahead


def test_the_consumer_sees_every_item_in_order():
    assert list(read_ahead(iter(range(1000)), depth=7)) == list(range(1000))


def test_the_producer_runs_ahead_by_at_most_depth():
    produced: list[int] = []

    def numbers() -> Iterator[int]:
        for n in range(100):
            produced.append(n)
            yield n

    reader = read_ahead(numbers(), depth=5)
    assert next(reader) == 0
    threading.Event().wait(0.2)  # time for the worker to fill the queue
    # item 0 taken, 5 waiting in the queue, and one more produced that waits for room
    assert len(produced) <= 1 + 5 + 1
    reader.close()


def test_an_error_arrives_after_the_items_produced_before_it():
    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise ConnectionError("server went away after page 1")

    seen = []
    with pytest.raises(ConnectionError, match="page 1"):
        for item in read_ahead(failing(), depth=10):
            seen.append(item)
    assert seen == [1, 2]


def test_leaving_early_stops_the_worker_and_closes_the_source_in_its_thread():
    closed_in: list[str] = []

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed_in.append(threading.current_thread().name)

    for item in read_ahead(endless(), depth=3, name="pull worker"):
        if item == 10:
            break
    assert closed_in == ["pull worker"]
    assert not any(thread.name == "pull worker" for thread in threading.enumerate())


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        next(read_ahead(iter([1]), depth=0))

"""The run lock: one process runs the batch at a time; the others are told who does; a dead run blocks no one."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from integrations.store import StoreError, same_host_pid_alive

LOCK = "ecg-agent-run"
LEASE_S = 6 * 3600
#: How long a PostgreSQL server may take to notice that a killed client's session is gone.
SESSION_END_TIMEOUT_S = 10.0
REPOSITORY_ROOT = Path(__file__).resolve().parents[3]
#: A process that tries the lock as "<host>:<its pid>", prints whether it got it, and holds it until stdin closes.
CONTENDER = """
import os, socket, sys
from integrations.store import Store
store = Store.from_url(sys.argv[1])
with store.run_lock("ecg-agent-run", holder=f"{socket.gethostname()}:{os.getpid()}", lease_s=3600) as lock:
    print(lock.acquired, flush=True)
    sys.stdin.read()
"""


def _contender(store_url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CONTENDER, store_url],
        cwd=REPOSITORY_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    finished = subprocess.Popen([sys.executable, "-c", ""])
    finished.wait()
    return finished.pid


#: The lease and the holder check are SQLite's; PostgreSQL frees the lock when the holder's session ends.
sqlite_only = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
postgresql_only = pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)


def test_the_first_holder_gets_the_lock_and_a_second_is_told_who_holds_it_since_when(store, clock):
    with (
        store.run_lock(LOCK, holder="host-a:101", lease_s=LEASE_S) as first,
        store.run_lock(LOCK, holder="host-b:202", lease_s=LEASE_S) as second,
    ):
        assert (first.acquired, first.held_by) == (True, None)
        assert (second.acquired, second.held_by) == (False, f"host-a:101 since {clock.now.isoformat()}")


def test_a_released_lock_can_be_taken_again_even_when_its_block_raised(store):
    with store.run_lock(LOCK, holder="host-a:101", lease_s=LEASE_S) as first:
        assert first.acquired
    with pytest.raises(RuntimeError), store.run_lock(LOCK, holder="host-b:202", lease_s=LEASE_S) as second:
        assert second.acquired
        raise RuntimeError("the run crashed")
    with store.run_lock(LOCK, holder="host-c:303", lease_s=LEASE_S) as third:
        assert third.acquired


def test_locks_of_different_names_do_not_exclude_each_other(store):
    with (
        store.run_lock(LOCK, holder="host-a:101", lease_s=LEASE_S) as run,
        store.run_lock("model-import", holder="host-a:101", lease_s=LEASE_S) as other,
    ):
        assert run.acquired and other.acquired


def test_a_holder_that_was_refused_does_not_release_the_lock_of_the_one_that_holds_it(store):
    with store.run_lock(LOCK, holder="host-a:101", lease_s=LEASE_S):
        with store.run_lock(LOCK, holder="host-b:202", lease_s=LEASE_S) as refused:
            assert not refused.acquired
        with store.run_lock(LOCK, holder="host-c:303", lease_s=LEASE_S) as third:
            assert not third.acquired and third.held_by.startswith("host-a:101 ")


def test_the_lock_cannot_be_taken_inside_a_unit_of_work(store):
    with (
        pytest.raises(StoreError, match="run lock ecg-agent-run: cannot be taken inside a unit of work"),
        store.transaction() as unit,
        unit.run_lock(LOCK, holder="host-a:101", lease_s=LEASE_S),
    ):
        pass


@sqlite_only
def test_on_sqlite_a_lock_whose_lease_ran_out_is_taken_over(store, clock):
    with store.run_lock(LOCK, holder="host-a:101", lease_s=60):
        clock.advance(61)  # host-a hangs, or lost its connection to the shared file
        with store.run_lock(LOCK, holder="host-b:202", lease_s=60) as takeover:
            assert takeover.acquired
            with store.run_lock(LOCK, holder="host-c:303", lease_s=60) as third:
                assert third.held_by == f"host-b:202 since {clock.now.isoformat()}"


@postgresql_only
def test_on_postgresql_a_lock_outlives_its_lease_while_its_holder_is_connected(store, clock):
    with store.run_lock(LOCK, holder="host-a:101", lease_s=60):
        clock.advance(61)
        with store.run_lock(LOCK, holder="host-b:202", lease_s=60) as second:
            assert not second.acquired


@sqlite_only
def test_on_sqlite_a_lock_whose_holder_is_gone_is_taken_over_before_its_lease_ends(store):
    gone = {"host-a:101"}
    with store.run_lock(LOCK, holder="host-a:101", lease_s=LEASE_S):
        alive = lambda holder: holder not in gone  # noqa: E731
        with store.run_lock(LOCK, holder="host-b:202", lease_s=LEASE_S, holder_alive=alive) as takeover:
            assert takeover.acquired


def test_two_processes_contending_for_the_lock_get_it_exactly_once(store_url):
    contenders = [_contender(store_url) for _ in range(2)]
    try:
        outcomes = sorted(contender.stdout.readline().strip() for contender in contenders)
    finally:
        for contender in contenders:
            contender.communicate(timeout=60)  # closes stdin: the holder releases
    assert outcomes == ["False", "True"]
    assert [contender.returncode for contender in contenders] == [0, 0]


def test_a_run_killed_while_holding_the_lock_does_not_block_the_rerun(store, store_url):
    holder = _contender(store_url)
    assert holder.stdout.readline().strip() == "True"
    holder.kill()  # SIGKILL: no chance to release
    holder.wait()
    holder.stdout.close()
    holder.stdin.close()
    deadline_s = time.monotonic() + SESSION_END_TIMEOUT_S
    while True:
        rerun = f"{socket.gethostname()}:{os.getpid()}"
        with store.run_lock(LOCK, holder=rerun, lease_s=LEASE_S, holder_alive=same_host_pid_alive) as lock:
            if lock.acquired or time.monotonic() > deadline_s:
                break
        time.sleep(0.05)
    assert lock.acquired, lock.held_by


def test_a_holder_on_this_host_is_alive_while_its_process_exists():
    assert same_host_pid_alive(f"{socket.gethostname()}:{os.getpid()}")
    assert not same_host_pid_alive(f"{socket.gethostname()}:{_dead_pid()}")


def test_a_holder_that_cannot_be_checked_from_here_counts_as_alive():
    assert same_host_pid_alive(f"some-other-host:{_dead_pid()}")
    assert same_host_pid_alive(f"{socket.gethostname()}:not-a-pid")
    assert same_host_pid_alive("no pid at all")

"""Backfill progress: partitions registered once, done only when told (and then for good), failures kept with
their error, and every backfill summed for `status`."""

from integrations.store import BackfillPartition, BackfillStatus


def _partitions(n: int, prefix: str = "k") -> list[BackfillPartition]:
    return [BackfillPartition(f"{prefix}{i}", "wfdb", f"/archive/p{i}/r.hea", 3) for i in range(n)]


def test_listing_the_same_partitions_again_registers_nothing_new(store):
    assert store.register_backfill_partitions("archive", _partitions(3)) == 3
    assert store.register_backfill_partitions("archive", _partitions(4)) == 1
    (progress,) = store.backfill_progress()
    assert (progress.backfill, progress.total, progress.count(BackfillStatus.PENDING)) == ("archive", 4, 4)


def test_done_partitions_carry_their_counts_and_a_late_failure_report_does_not_undo_them(store):
    store.register_backfill_partitions("archive", _partitions(3))
    store.finish_backfill_partition("archive", "k0", BackfillStatus.DONE, counts={"scored": 3})
    store.finish_backfill_partition("archive", "k1", BackfillStatus.DONE, counts={"scored": 2, "quarantined": 1})
    store.finish_backfill_partition("archive", "k1", BackfillStatus.FAILED, error="KilledWorker: late news")
    store.finish_backfill_partition("archive", "k2", BackfillStatus.FAILED, error="BackfillError: model refused")

    assert store.done_backfill_partitions("archive") == {"k0", "k1"}
    (progress,) = store.backfill_progress()
    assert dict(progress.partitions) == {BackfillStatus.DONE: 2, BackfillStatus.FAILED: 1}
    assert dict(progress.counts) == {"scored": 5, "quarantined": 1}
    assert (progress.last_error, progress.failed_keys) == ("BackfillError: model refused", ("k2",))


def test_a_failed_partition_done_by_the_next_backfill_counts_as_done(store):
    store.register_backfill_partitions("archive", _partitions(1))
    store.finish_backfill_partition("archive", "k0", BackfillStatus.FAILED, error="boom")
    store.finish_backfill_partition("archive", "k0", BackfillStatus.DONE, counts={"already_scored": 2, "scored": 1})
    (progress,) = store.backfill_progress()
    assert (progress.count(BackfillStatus.DONE), progress.last_error, progress.counts["scored"]) == (1, None, 1)


def test_backfills_are_kept_apart_by_name(store):
    store.register_backfill_partitions("2019", _partitions(2))
    store.register_backfill_partitions("2020", _partitions(1))
    store.finish_backfill_partition("2019", "k0", BackfillStatus.DONE, counts={"scored": 1})
    assert store.done_backfill_partitions("2020") == set()
    assert {p.backfill: p.total for p in store.backfill_progress()} == {"2019": 2, "2020": 1}

"""Every source, the same contract: one poison item never blocks the others, times are placed in the site's zone,
a duplicate is scored once, an implausible signal is refused, a crash between commit and acknowledgement loses and
duplicates nothing, and a night with nothing new is a quiet success."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agent.service import EXIT_OK, AgentService
from agent.sources.fhir import FhirEcgSource
from agent.sources.hl7_inbox import Hl7InboxSource
from agent.sources.wfdb_folder import WfdbFolderSource
from integrations.store import RunStatus, Store, StudyStatus

from .conftest import Feed, ecg

pytestmark = pytest.mark.slow
N_TARGETS = 4  # the tiny artifact: 2 diagnoses + 2 lab targets

#: A time with no UTC offset, written as each system writes one; the site is in America/New_York (UTC-5 in November).
LOCAL_TIME = {"fhir": "2026-11-20", "hl7": "20261120031400", "wfdb": "03:14:00 20/11/2026"}
LOCAL_TIME_UTC = {
    "fhir": datetime(2026, 11, 20, 5, 0, tzinfo=UTC),  # a date: the start of that day at the site
    "hl7": datetime(2026, 11, 20, 8, 14, tzinfo=UTC),
    "wfdb": datetime(2026, 11, 20, 8, 14, tzinfo=UTC),
}
#: Less precise still: a month, or (WFDB) a time of day without a date.
PARTIAL_TIME = {"fhir": "2026-11", "hl7": "202611", "wfdb": "03:14:00"}
PARTIAL_TIME_UTC = {
    "fhir": datetime(2026, 11, 1, 4, 0, tzinfo=UTC),  # 1 November 2026 begins in daylight time (UTC-4) in New York
    "hl7": datetime(2026, 11, 1, 4, 0, tzinfo=UTC),
    "wfdb": None,  # a time of day alone places nothing
}
SOURCE_CLASSES = {"fhir": FhirEcgSource, "hl7": Hl7InboxSource, "wfdb": WfdbFolderSource}


def _run(feed: Feed):
    return AgentService(feed.settings).run_once(progress=False)


def _store(feed: Feed) -> Store:
    return Store.from_url(feed.settings.database_url.get_secret_value())


def _scored(store: Store) -> list:
    return [s for s in store.list_studies(status=StudyStatus.SCORED)]


def test_a_poison_item_never_blocks_the_ones_after_it_over_two_runs(feed: Feed):
    feed.deliver("good-1", ecg(1), time_text=LOCAL_TIME[feed.name])
    feed.deliver_poison("poison")
    feed.deliver("good-2", ecg(2), time_text=LOCAL_TIME[feed.name])
    first = _run(feed)
    feed.deliver("good-3", ecg(3), time_text=LOCAL_TIME[feed.name])
    second = _run(feed)
    third = _run(feed)
    store = _store(feed)
    # The poison is quarantined where it is first refused (the MLLP listener refuses at receipt what it can).
    assert first.report.counts["scored"] == 2 and len(store.list_quarantine()) == 1
    assert second.report.counts["scored"] == 1 and second.report.counts["quarantined"] == 0
    assert third.exit_code == EXIT_OK and third.report.counts["scored"] == third.report.counts["quarantined"] == 0
    assert len(_scored(store)) == 3
    [entry] = store.list_quarantine()
    assert entry.seen_count >= 1
    assert all(len(store.get_predictions(study.id)) == N_TARGETS for study in _scored(store))


def test_a_time_without_offset_is_placed_in_the_site_zone_and_its_text_kept(feed: Feed):
    feed.deliver("local", ecg(1), time_text=LOCAL_TIME[feed.name])
    feed.deliver("partial", ecg(2), time_text=PARTIAL_TIME[feed.name])
    outcome = _run(feed)
    assert outcome.exit_code == EXIT_OK, outcome.message
    studies = {study.study.patient_ref or study.study.source_id: study for study in _scored(_store(feed))}
    assert len(studies) == 2
    acquired = sorted((s.study.acquired_at for s in studies.values()), key=lambda t: (t is None, t))
    expected = sorted((LOCAL_TIME_UTC[feed.name], PARTIAL_TIME_UTC[feed.name]), key=lambda t: (t is None, t))
    assert acquired == expected
    assert {s.study.acquired_at_text for s in studies.values()} == {LOCAL_TIME[feed.name], PARTIAL_TIME[feed.name]}


def test_the_same_item_delivered_twice_is_scored_once(feed: Feed):
    feed.deliver("twice", ecg(1), time_text=LOCAL_TIME[feed.name])
    first = _run(feed)
    feed.deliver_again("twice")
    second = _run(feed)
    store = _store(feed)
    assert first.report.counts["scored"] == 1 and second.report.counts["scored"] == 0
    [study] = _scored(store)
    assert len(store.get_predictions(study.id)) == N_TARGETS


def test_an_implausible_signal_is_refused_and_never_scored(feed: Feed):
    feed.deliver("volts", ecg(1, scale_mv=1e5), time_text=LOCAL_TIME[feed.name])  # ±100 V: a unit error
    feed.deliver("fine", ecg(2), time_text=LOCAL_TIME[feed.name])
    outcome = _run(feed)
    store = _store(feed)
    assert outcome.report.counts["scored"] == 1 and outcome.report.counts["quarantined"] == 1
    [entry] = store.list_quarantine()
    assert entry.entry.reason.split(":")[0] in {"implausible-amplitude", "saturated", "clipped"}, entry.entry.reason


def test_a_crash_between_commit_and_acknowledgement_loses_and_duplicates_nothing(feed: Feed, monkeypatch):
    for index in range(5):
        feed.deliver(f"e{index}", ecg(index), time_text=LOCAL_TIME[feed.name])
    source_class = SOURCE_CLASSES[feed.name]
    acknowledge = source_class.done

    def die_after_the_first_commit(self, items):
        monkeypatch.setattr(source_class, "done", acknowledge)
        raise SystemExit("killed between the commit and the acknowledgement")

    monkeypatch.setattr(source_class, "done", die_after_the_first_commit)
    with pytest.raises(SystemExit):
        _run(feed)
    rerun = _run(feed)
    store = _store(feed)
    assert rerun.exit_code == EXIT_OK, rerun.message
    assert len(_scored(store)) == 5
    assert all(len(store.get_predictions(study.id)) == N_TARGETS for study in _scored(store))
    assert [run.status for run in store.list_runs()] == [RunStatus.SUCCEEDED, RunStatus.ABANDONED]


def test_a_night_with_nothing_new_is_a_quiet_success(feed: Feed):
    feed.deliver("once", ecg(1), time_text=LOCAL_TIME[feed.name])
    _run(feed)
    quiet = _run(feed)
    assert quiet.exit_code == EXIT_OK, quiet.message
    assert quiet.report.counts["scored"] == quiet.report.counts["quarantined"] == quiet.report.failure_rate == 0

"""WFDB records dropped into a folder; the feed remembers them in the study table."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, tzinfo
from pathlib import Path

from agent.sources import WFDB_SOURCE, Pulled, PulledEcg, RejectedItem
from integrations.store import QuarantineEntry, Store
from integrations.wfdb_feed import NewRecord, scan

QUARANTINE_KIND = "wfdb_record"


class WfdbFolderSource:
    """New WFDB records in a folder; the feed remembers them in the study table and quarantines unreadable ones."""

    name = WFDB_SOURCE

    def __init__(self, folder: Path, store: Store, *, settle_s: float, site_tz: tzinfo = UTC) -> None:
        self._folder, self._store, self._settle_s, self._site_tz = folder, store, settle_s, site_tz

    def pull(self) -> Iterator[Pulled]:
        items = scan(self._folder, self._store, source=WFDB_SOURCE, settle_s=self._settle_s,
                     device_timezone=self._site_tz)  # fmt: skip
        for item in items:
            if isinstance(item, NewRecord):
                study = self._store.get_study_by_id(item.study_id).study
                yield PulledEcg(item.record, study, token=item.study_id)
            else:
                entry = QuarantineEntry(QUARANTINE_KIND, str(self._folder), item.reason, item.record_id)
                yield RejectedItem(entry, token=item.record_id, quarantine_id=item.quarantine_id)

    def done(self, items: Sequence[Pulled]) -> None:
        """Nothing to do: a scored study is never handed out again by the feed."""

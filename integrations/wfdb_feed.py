"""A folder of WFDB records as a feed: each new, complete record is handed out once, each corrupt one quarantined.

:func:`scan` walks the folder (recursively) and yields a :class:`NewRecord` (the
canonical :class:`~integrations.ecg.EcgRecord`, remembered in the store's ECG studies)
or a :class:`RejectedRecord` (quarantined, with the reason). A record is identified by
its path relative to the folder, and versioned by the sha256 of its files, so an
unchanged record is never handed out twice and a rewritten one is a new version.

Files are copied in by other programs, so a record may be half-written when we look:
one whose files changed less than ``settle_s`` ago, or whose data file is missing, is
left for a later scan, never rejected. Only a settled record that still does not read
is quarantined.

A watermark (the store's, per ``source``) remembers up to which change time the folder
has been examined, so a nightly scan re-reads only what changed since the last one.
It uses the inode change time as well as the modification time, because copies that
keep the original mtime (``cp -p``, ``rsync -a``) still get a fresh ctime.

The watermark moves when the caller has consumed the whole scan, which a caller that
takes items in batches does *before* it has committed the last batch. So each scan
first looks again, whatever the watermark, at the records whose studies are still
``new``: handed out by an earlier scan, never scored (or failed) because that run died.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path

import wfdb

from integrations.ecg import EcgRecord
from integrations.errors import EcgReadError, InvalidEcgError
from integrations.store import EcgStudy, QuarantineEntry, Store, StudyStatus
from integrations.wfdb_files import read_wfdb

logger = logging.getLogger(__name__)

DEFAULT_SOURCE = "wfdb"
#: How long a record's files must be unchanged before it is read; longer than any copy into the folder takes.
DEFAULT_SETTLE_S = 60.0
QUARANTINE_KIND = "wfdb_record"
#: Formats whose data file size follows from the header exactly (the packed and FLAC ones are left to wfdb).
_BYTES_PER_SAMPLE = {"8": 1, "16": 2, "24": 3, "32": 4, "61": 2, "80": 1, "160": 2}
#: MIMIC-IV-ECG keeps each subject's records under ``pNNNNNNNN/``.
_MIMIC_SUBJECT_DIR = re.compile(r"^p(\d{8})$")
_HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class NewRecord:
    """A record to score: ``record.record_id`` is its relative path, ``record.source_version`` its content hash."""

    study_id: int
    record: EcgRecord


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    """A record that will not read; it is in quarantine as ``quarantine_id``."""

    record_id: str
    reason: str
    quarantine_id: int


FeedItem = NewRecord | RejectedRecord


class _NotReady(Exception):
    """The record is still being written; look again in a later scan."""


class _Unusable(Exception):
    """The record is settled and still cannot be read: the message is the quarantine reason.

    Reasons start with the prefix every source uses: ``malformed:``, or ``unsupported:`` for a layout we do not read.
    """

    def __init__(self, detail: str, *, reject_reason: str = "malformed") -> None:
        super().__init__(f"{reject_reason}: {detail}")


@dataclass(frozen=True, slots=True)
class _Record:
    """One ``.hea`` found in the folder and what it takes to judge it."""

    folder: Path
    header_path: Path
    source: str

    @property
    def base(self) -> Path:
        return self.header_path.with_suffix("")

    @property
    def record_id(self) -> str:
        return self.base.relative_to(self.folder).as_posix()


def scan(
    folder: Path,
    store: Store,
    *,
    source: str = DEFAULT_SOURCE,
    settle_s: float = DEFAULT_SETTLE_S,
    device_timezone: tzinfo = UTC,
    now_s: Callable[[], float] = time.time,
) -> Iterator[FeedItem]:
    """Yield every record under ``folder`` that is new since the last scan of ``source``.

    First the records an earlier scan handed out that are still unscored (its run
    died), then the others in path order. ``device_timezone`` is the zone of the
    acquisition times in the headers (WFDB keeps none). Store errors propagate: the
    scan stops and its watermark stays where it was, so an interrupted scan is simply
    repeated. The watermark advances only once the caller has consumed every item.
    """
    settled_before_s = now_s() - settle_s
    watermark_key = f"wfdb-feed:{source}"
    cutoff_s = _watermark_s(store, watermark_key)
    unscored = _unscored_record_ids(folder, store, source)
    examined_first = set(unscored)
    for record_id in unscored:
        # Ignore the watermark: it may have moved past these before their run committed them.
        candidate = _Record(folder, folder / f"{record_id}.hea", source)
        if (item := _examine(candidate, store, float("-inf"), settled_before_s, device_timezone)) is not None:
            yield item
    for header_path in headers_in_path_order(folder):
        candidate = _Record(folder, header_path, source)
        if candidate.record_id in examined_first:
            continue
        if (item := _examine(candidate, store, cutoff_s, settled_before_s, device_timezone)) is not None:
            yield item
    store.advance_watermark(watermark_key, datetime.fromtimestamp(settled_before_s, UTC).isoformat())


def headers_in_path_order(folder: Path) -> Iterator[Path]:
    """Every ``*.hea`` file under ``folder``, in path order (as ``sorted(folder.rglob("*.hea"))``), found as the walk
    reaches each directory.

    A night's folder may hold tens of thousands of records: the walk holds the names of the directories it is
    in, never every path at once. Like ``rglob``, it does not follow links to directories (linked files count)
    and passes over a directory it may not read or that vanished.
    """
    try:
        with os.scandir(folder) as entries:
            listing = sorted((entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    for name, is_directory in listing:
        if is_directory:
            yield from headers_in_path_order(folder / name)
        elif name.endswith(".hea"):
            yield folder / name


def read_archived_record(
    folder: Path, header_path: Path, *, source: str = DEFAULT_SOURCE, device_timezone: tzinfo = UTC
) -> EcgRecord:
    """One record of an archive (files complete, nothing being copied in), read as :func:`scan` hands it out.

    Its ``record_id`` is the path relative to ``folder`` and its ``source_version`` the content sha256, so a
    backfill of the folder the nightly feed watches knows each record by the same study key. Raises
    :class:`EcgReadError` whose ``reason`` is the quarantine reason the feed would give (``malformed: ...``).
    """
    candidate = _Record(folder, header_path, source)
    try:
        header = _read_header(candidate)
        files = [header_path, *(header_path.parent / name for name in _data_file_names(header))]
        missing = [path.name for path in files if not path.is_file()]
        if missing:
            raise _Unusable(f"data file missing: {', '.join(missing)}")
        version = _content_sha256(files)
        _check_data_sizes(candidate, header)
        return _read(candidate, version, device_timezone)
    except (_Unusable, _NotReady) as exc:
        raise EcgReadError(str(candidate.base), str(exc)) from exc


def quarantine_entry(folder: Path, header_path: Path, reason: str) -> QuarantineEntry:
    """How the feed names an unreadable record in the quarantine: one entry per (record, reason)."""
    return QuarantineEntry(kind=QUARANTINE_KIND, origin=str(folder), reason=reason,
                           raw_ref=str(header_path.with_suffix("")))  # fmt: skip


def _unscored_record_ids(folder: Path, store: Store, source: str) -> list[str]:
    """Ids of the records with a study of ``source`` still ``new`` and a header still there, in path order."""
    record_ids: set[str] = set()  # a record may have several unscored versions
    after_id = 0
    while page := store.list_studies(source=source, status=StudyStatus.NEW, after_id=after_id):
        after_id = page[-1].id
        record_ids.update(s.study.source_id for s in page if (folder / f"{s.study.source_id}.hea").is_file())
    if record_ids:
        logger.info("WFDB feed %s: %d records handed out before are still unscored", source, len(record_ids))
    return sorted(record_ids)


def _watermark_s(store: Store, key: str) -> float:
    watermark = store.get_watermark(key)
    return float("-inf") if watermark is None else datetime.fromisoformat(watermark.value).timestamp()


def _examine(
    candidate: _Record, store: Store, cutoff_s: float, settled_before_s: float, device_timezone: tzinfo
) -> FeedItem | None:
    try:
        settled = _settled_files(candidate, cutoff_s, settled_before_s)
        if settled is None:
            return None
        header, files = settled
        version = _content_sha256(files)
        known = store.get_study(candidate.source, candidate.record_id, version)
        if known is not None and known.status != StudyStatus.NEW:
            return None  # scored (or failed) before: never hand it out twice
        _check_data_sizes(candidate, header)
        record = _read(candidate, version, device_timezone)
    except _NotReady as exc:
        logger.info("WFDB record %s not ready: %s", candidate.record_id, exc)
        return None
    except _Unusable as exc:
        return _reject(candidate, store, str(exc))
    study = store.upsert_study(study_of(record, candidate.source))
    return NewRecord(study.id, record)


def _settled_files(
    candidate: _Record, cutoff_s: float, settled_before_s: float
) -> tuple[wfdb.Record, list[Path]] | None:
    """The header and the record's files, or None when none changed since the cutoff.

    Raises :class:`_NotReady` while the record is being written, :class:`_Unusable`
    for a settled header that does not parse.
    """
    header_changed_s = _changed_s(candidate.header_path)
    try:
        header = _read_header(candidate)
    except _Unusable:
        if header_changed_s < cutoff_s:
            return None
        if header_changed_s >= settled_before_s:
            raise _NotReady("header still being written") from None
        raise
    files = [candidate.header_path, *(candidate.header_path.parent / name for name in _data_file_names(header))]
    present = [path for path in files if path.exists()]
    changed_s = max(_changed_s(path) for path in present)
    if changed_s < cutoff_s:
        return None  # examined in an earlier scan (a data file deleted since does not make it new)
    if len(present) < len(files):
        raise _NotReady(f"waiting for {', '.join(path.name for path in files if path not in present)}")
    if changed_s >= settled_before_s:
        raise _NotReady("files changed too recently")
    return header, files


def _changed_s(path: Path) -> float:
    try:
        status = path.stat()
    except FileNotFoundError as exc:
        raise _NotReady(f"{path.name} disappeared while scanning") from exc
    return max(status.st_mtime, status.st_ctime)


def _read_header(candidate: _Record) -> wfdb.Record:
    try:
        header = wfdb.rdheader(str(candidate.base))
    except FileNotFoundError as exc:
        raise _NotReady("header disappeared while scanning") from exc
    except (ValueError, IndexError, TypeError, AttributeError, OSError) as exc:
        # wfdb reports a malformed header with whatever its parser raised.
        raise _Unusable(f"unreadable WFDB header: {exc or type(exc).__name__}") from exc
    if not isinstance(header, wfdb.Record):
        raise _Unusable("multi-segment WFDB records are not read", reject_reason="unsupported")
    if not header.n_sig or not header.file_name or len(header.file_name) != header.n_sig:
        raise _Unusable(f"header declares {header.n_sig or 0} signals but describes {len(header.file_name or [])}")
    return header


def _data_file_names(header: wfdb.Record) -> list[str]:
    return sorted(set(header.file_name))


def _content_sha256(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        try:
            with path.open("rb") as stream:
                while chunk := stream.read(_HASH_CHUNK_BYTES):
                    digest.update(chunk)
        except FileNotFoundError as exc:
            raise _NotReady(f"{path.name} disappeared while scanning") from exc
        except OSError as exc:
            raise _Unusable(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def _check_data_sizes(candidate: _Record, header: wfdb.Record) -> None:
    """A settled data file whose size disagrees with its header is truncated or foreign: reject it."""
    if not header.sig_len:
        return  # length unknown: wfdb reads to the end of the file
    for name in _data_file_names(header):
        signals = [i for i, file_name in enumerate(header.file_name) if file_name == name]
        formats = {header.fmt[i] for i in signals}
        if len(formats) != 1 or (fmt := formats.pop()) not in _BYTES_PER_SAMPLE:
            continue
        offset = (header.byte_offset or [0] * header.n_sig)[signals[0]] or 0
        expected = offset + header.sig_len * len(signals) * _BYTES_PER_SAMPLE[fmt]
        actual = (candidate.header_path.parent / name).stat().st_size
        if actual != expected:
            raise _Unusable(f"data file {name} has {actual} bytes, the header expects {expected}")


def _read(candidate: _Record, version: str, device_timezone: tzinfo) -> EcgRecord:
    try:
        record = read_wfdb(
            candidate.base,
            record_id=candidate.record_id,
            subject_id=_mimic_subject_id(candidate.record_id),
            source=candidate.source,
            site_tz=device_timezone,
        )
    except (EcgReadError, InvalidEcgError) as exc:
        raise _Unusable(exc.reason) from exc
    return replace(record, source_version=version)


def _mimic_subject_id(record_id: str) -> str | None:
    for part in record_id.split("/"):
        if match := _MIMIC_SUBJECT_DIR.match(part):
            return match.group(1)
    return None


def study_of(record: EcgRecord, source: str) -> EcgStudy:
    """The study key of a record read by the feed: (source, relative path, content sha256)."""
    assert record.source_version is not None  # set by _read
    return EcgStudy(
        source=source,
        source_id=record.record_id,
        source_version=record.source_version,
        fs_hz=record.fs_hz,
        leads=record.lead_names,
        patient_ref=record.subject_id,
        acquired_at=record.acquired_at,
        acquired_at_text=record.acquired_at_text,
    )


def _reject(candidate: _Record, store: Store, reason: str) -> RejectedRecord:
    """Quarantine the record: one entry per (record, reason), which a scan that meets it again only counts."""
    logger.warning("WFDB record %s rejected: %s", candidate.record_id, reason)
    entry = quarantine_entry(candidate.folder, candidate.header_path, reason)
    return RejectedRecord(candidate.record_id, reason, store.add_quarantine(entry))

"""An archive as partitions, and a partition's files as the items a run takes.

Three kinds of archive, each read with the decoder its nightly source uses, so every ECG gets the
study key the nightly run would give it (a backfill and a nightly run of the same ECG are one study):

- a WFDB tree, read recursively (:func:`integrations.wfdb_feed.read_archived_record`: relative path,
  content sha256);
- a FHIR Bulk Data ``$export`` output: a folder of NDJSON files, one resource per line; ECG
  Observations are decoded (``integrations.fhir.pull.read_ecg_observation``: id, versionId), other
  resources and other Observations (labs, vitals: an export of ``Observation`` holds them all) are
  skipped and counted; a large file is cut into line-aligned byte ranges, so no partition is a whole
  multi-gigabyte file;
- an HL7 v2 dump: one ORU^R01 per file, or MLLP-framed batch files holding many (MSH-3|MSH-4|MSH-10).

Listing is deterministic (sorted paths), and a partition's key is the sha256 of what it holds, so
listing the same archive again gives the same partitions and a rerun skips the done ones.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path

from agent.sources import WFDB_SOURCE, Pulled, PulledEcg, RejectedItem
from agent.sources.fhir import QUARANTINE_KIND as FHIR_QUARANTINE_KIND
from agent.sources.fhir import pulled_observation
from agent.sources.hl7_inbox import QUARANTINE_KIND as HL7_QUARANTINE_KIND
from agent.sources.hl7_inbox import decode_hl7_message, hl7_study_id
from integrations.errors import EcgReadError
from integrations.fhir.pull import EcgPullConfig, read_ecg_observation
from integrations.hl7.errors import Hl7MessageError
from integrations.hl7.message import read_header
from integrations.hl7.mllp import END_BLOCK, START_BLOCK
from integrations.store import BackfillPartition, QuarantineEntry
from integrations.wfdb_feed import quarantine_entry, read_archived_record, study_of

WFDB_KIND = "wfdb"
NDJSON_KIND = "fhir-ndjson"
HL7_KIND = "hl7"
KINDS = (WFDB_KIND, NDJSON_KIND, HL7_KIND)


@dataclass(frozen=True, slots=True)
class ArchiveRoots:
    """The folders of one archive, by kind; any may be absent."""

    wfdb: Path | None = None
    fhir_ndjson: Path | None = None
    hl7: Path | None = None

    def by_kind(self) -> dict[str, Path]:
        roots = {WFDB_KIND: self.wfdb, NDJSON_KIND: self.fhir_ndjson, HL7_KIND: self.hl7}
        return {kind: root for kind, root in roots.items() if root is not None}


@dataclass(frozen=True, slots=True)
class Piece:
    """A file, or the byte range ``[start, end)`` of an NDJSON file (``end`` None: to its end)."""

    path: Path
    start: int = 0
    end: int | None = None


@dataclass(frozen=True, slots=True)
class Partition:
    """Files of one kind under one root, scored together by one task."""

    kind: str
    root: Path
    pieces: tuple[Piece, ...]

    @property
    def key(self) -> str:
        digest = hashlib.sha256(f"{self.kind}\0{self.root}".encode())
        for piece in self.pieces:
            digest.update(f"\0{piece.path.relative_to(self.root).as_posix()}:{piece.start}:{piece.end}".encode())
        return digest.hexdigest()

    def describe(self) -> BackfillPartition:
        first = self.pieces[0]
        where = f"{first.path}" + (f"@{first.start}" if first.start else "")
        return BackfillPartition(self.key, self.kind, where, len(self.pieces))


def list_partitions(roots: ArchiveRoots, *, files_per_partition: int, ndjson_range_bytes: int) -> list[Partition]:
    """Every partition of the archive, in path order: ``files_per_partition`` files (or NDJSON ranges) each."""
    partitions: list[Partition] = []
    for kind, root in roots.by_kind().items():
        pieces = list(_pieces(kind, root, ndjson_range_bytes))
        for start in range(0, len(pieces), files_per_partition):
            partitions.append(Partition(kind, root, tuple(pieces[start : start + files_per_partition])))
    return partitions


def _pieces(kind: str, root: Path, ndjson_range_bytes: int) -> Iterator[Piece]:
    if kind == WFDB_KIND:
        yield from (Piece(path) for path in sorted(root.rglob("*.hea")))
    elif kind == NDJSON_KIND:
        for path in sorted(root.rglob("*.ndjson")):
            yield from _line_ranges(path, ndjson_range_bytes)
    else:
        yield from (Piece(path) for path in sorted(root.rglob("*")) if path.is_file() and not path.name.startswith("."))


def _line_ranges(path: Path, range_bytes: int) -> Iterator[Piece]:
    """``path`` in ranges of about ``range_bytes``, each starting at a line start (found by seeking, not reading)."""
    size = path.stat().st_size
    start = 0
    with path.open("rb") as stream:
        while start + range_bytes < size:
            stream.seek(start + range_bytes)
            stream.readline()  # to the end of the line the cut falls in
            end = stream.tell()
            if end >= size:
                break
            yield Piece(path, start, end)
            start = end
    yield Piece(path, start, None)


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How a worker decodes: the site zone for times without offset, the FHIR ECG code and required leads."""

    site_tz: tzinfo
    fhir: EcgPullConfig


def read_partition(partition: Partition, options: ReadOptions, skipped: Counter[str]) -> Iterator[Pulled]:
    """The partition's ECGs and rejected items, file by file; what is not an ECG at all is counted in ``skipped``."""
    for piece in partition.pieces:
        if partition.kind == WFDB_KIND:
            yield _wfdb_record(partition.root, piece.path, options)
        elif partition.kind == NDJSON_KIND:
            yield from _ndjson_observations(piece, options, skipped)
        else:
            yield from _hl7_messages(piece.path, options)


def _wfdb_record(root: Path, header_path: Path, options: ReadOptions) -> Pulled:
    try:
        record = read_archived_record(root, header_path, source=WFDB_SOURCE, device_timezone=options.site_tz)
    except EcgReadError as exc:
        return RejectedItem(quarantine_entry(root, header_path, exc.reason))
    return PulledEcg(record, study_of(record, WFDB_SOURCE))


def _ndjson_observations(piece: Piece, options: ReadOptions, skipped: Counter[str]) -> Iterator[Pulled]:
    with piece.path.open("rb") as stream:
        stream.seek(piece.start)
        while piece.end is None or stream.tell() < piece.end:
            offset = stream.tell()
            line = stream.readline()
            if not line:
                return
            if not line.strip():
                continue
            try:
                resource = json.loads(line)
            except ValueError as exc:  # the per-line boundary: one bad line, one reason
                reason = f"malformed: not a JSON resource ({exc.__class__.__name__}: {str(exc)[:200]})"
                yield RejectedItem(QuarantineEntry(FHIR_QUARANTINE_KIND, str(piece.path), reason,
                                                   f"{piece.path}@{offset}"))  # fmt: skip
                continue
            if not _is_ecg_observation(resource, options.fhir.ecg_code):
                skipped["not_ecg"] += 1
                continue
            yield pulled_observation(read_ecg_observation(resource, options.fhir), origin=str(piece.path))


def _is_ecg_observation(resource: object, ecg_code: str) -> bool:
    """An Observation coded with the ECG token (``system|code``, or a bare code matching any system)."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Observation":
        return False
    system, _, code = ecg_code.rpartition("|")
    codings = (resource.get("code") or {}).get("coding") or ()
    return any(
        isinstance(c, dict) and c.get("code") == code and (not system or c.get("system") == system) for c in codings
    )


def _hl7_messages(path: Path, options: ReadOptions) -> Iterator[Pulled]:
    origin = str(path)
    for index, message in enumerate(split_hl7_file(path.read_bytes())):
        try:
            header = read_header(message)
        except Hl7MessageError as exc:
            entry = QuarantineEntry(HL7_QUARANTINE_KIND, origin, exc.quarantine_reason, f"{path}#{index + 1}")
            yield RejectedItem(entry)
            continue
        application, facility = header.sender.application, header.sender.facility
        source_id = hl7_study_id(application, facility, header.control_id)
        # The listener's quarantine name for a message: a resent message is the same item.
        raw_ref = f"msh={application}|{facility}|{header.control_id}"
        yield decode_hl7_message(message, source_id, origin=origin, raw_ref=raw_ref, token=None,
                                 site_tz=options.site_tz)  # fmt: skip


def split_hl7_file(raw: bytes) -> list[bytes]:
    """The messages of a dump file: MLLP frames if it starts with one (0x0B ... 0x1C 0x0D), else the whole file.

    Text between frames (line breaks some tools add) is ignored; an unterminated last frame is kept as
    it is, so its decoder rejects it with a reason rather than it vanishing.
    """
    if not raw.lstrip(b"\r\n \t").startswith(START_BLOCK):  # not lstrip(): 0x0B is whitespace to Python
        return [raw]
    messages = []
    position = raw.find(START_BLOCK)
    while position >= 0:
        end = raw.find(END_BLOCK, position)
        if end < 0:
            messages.append(raw[position + len(START_BLOCK) :])
            break
        messages.append(raw[position + len(START_BLOCK) : end])
        position = raw.find(START_BLOCK, end + len(END_BLOCK))
    return messages

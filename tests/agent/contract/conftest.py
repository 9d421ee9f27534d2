"""One feed per source, each putting ECGs into its source's own system the way a hospital would.

The contract tests run every source through the same cases, as APScheduler runs one suite
against every job store: a feed knows how to deliver an ECG (with the acquisition time written
as that system writes it), a poison item, and the same item a second time. The agent is then
run in-process exactly as ``run-once`` runs it (settings → service → sources).

- ``fhir``: ECG Observations created on the real FHIR engine (Medplum behind our shim); each test
  uses its own ECG code, so tests see only their own ECGs.
- ``hl7``: ORU^R01 messages sent over MLLP to the real listener, which stores them in the inbox.
- ``wfdb``: WFDB records written into a drop folder.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np
import pytest

from agent.registry import ModelRegistry
from agent.settings import AgentSettings, load_settings
from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.fhir import FhirClient, FhirConfig, ecg_to_observation
from integrations.hl7.ecg_oru_encoder import encode_ecg_oru
from integrations.hl7.listener import MllpListener, MllpListenerConfig
from integrations.hl7.message import format_dtm
from integrations.hl7.mllp import END_BLOCK, frame
from integrations.store import Store
from integrations.wfdb_files import write_wfdb

SITE_TIMEZONE = "America/New_York"
#: Written by the encoders, then replaced by the time text a case wants (as the sending system would write it).
_PLACEHOLDER_TIME = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)


def ecg(index: int, *, scale_mv: float = 1.0) -> EcgRecord:
    """A plausible 12-lead, 10 s, 500 Hz ECG (beats every 0.8 s), different per index."""
    rng = np.random.default_rng(index)
    t = np.arange(5000) / 500.0
    beats = np.exp(-(((t % 0.8) - 0.4) ** 2) / 2e-4)
    signal = np.stack([(0.4 + 0.1 * lead) * beats + 0.03 * rng.standard_normal(t.size) for lead in range(12)])
    return EcgRecord(f"ecg-{index}", signal * scale_mv, 500.0, MODEL_LEAD_ORDER, subject_id=f"MRN{index}",
                     acquired_at=_PLACEHOLDER_TIME)  # fmt: skip


class Feed(Protocol):
    name: str
    settings: AgentSettings

    def deliver(self, key: str, record: EcgRecord, *, time_text: str) -> None:
        """Put ``record`` into the source's system under ``key``, its time written as ``time_text``."""

    def deliver_poison(self, key: str) -> None:
        """Put in something that cannot be an ECG."""

    def deliver_again(self, key: str) -> None:
        """The same item arrives once more (a resend, a re-read, a copy)."""


def settings_for(tmp_path: Path, source_section: str) -> AgentSettings:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'database_url = "sqlite:///{tmp_path / "agent.db"}"\n'
        f'registry_dir = "{tmp_path / "models"}"\n'
        f'[site]\ntimezone = "{SITE_TIMEZONE}"\n'
        "[scoring]\nbatch_size = 2\nmax_failure_rate = 1.0\n" + source_section
    )
    return load_settings(config)


class FhirFeed:
    name = "fhir"

    def __init__(self, base_url: str, tmp_path: Path) -> None:
        self.system, self.code = "urn:test:ecg", uuid.uuid4().hex
        self.client = FhirClient(FhirConfig(base_url=base_url))
        self.section = (
            f'[sources.fhir]\nenabled = true\necg_code = "{self.system}|{self.code}"\npage_size = 3\n'
            f'[sources.fhir.server]\nbase_url = "{base_url}"\nmax_retries = 1\n'
        )
        self.settings = settings_for(tmp_path, self.section)

    def deliver(self, key: str, record: EcgRecord, *, time_text: str) -> None:
        observation = ecg_to_observation(record, subject_reference=f"Patient/{key}")
        observation["code"] = {"coding": [{"system": self.system, "code": self.code}]}
        observation["effectiveDateTime"] = time_text
        self.client.create(observation)

    def deliver_poison(self, key: str) -> None:
        observation = {"resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{key}"},
                       "code": {"coding": [{"system": self.system, "code": self.code}]}}  # fmt: skip
        self.client.create(observation)

    def deliver_again(self, key: str) -> None:
        """Nothing to send: the next pull re-reads inside its overlap window, which is how FHIR repeats itself."""


class Hl7Feed:
    name = "hl7"

    def __init__(self, tmp_path: Path) -> None:
        self.section = "[sources.hl7]\nenabled = true\n"
        self.settings = settings_for(tmp_path, self.section)
        self.sent: dict[str, bytes] = {}

    def deliver(self, key: str, record: EcgRecord, *, time_text: str) -> None:
        raw = encode_ecg_oru(record, control_id=key).replace(format_dtm(_PLACEHOLDER_TIME).encode(), time_text.encode())
        self._send(key, raw)

    def deliver_poison(self, key: str) -> None:
        """A message the listener took (its receipt check is quick) but that cannot be decoded: no leads at all."""
        good = encode_ecg_oru(ecg(0), control_id=key).decode()
        segments = [s for s in good.split("\r") if not s.startswith("OBX")]
        self._send(key, "\r".join(segments).encode(), expect_stored=False)

    def deliver_again(self, key: str) -> None:
        self._send(key, self.sent[key])

    def _send(self, key: str, raw: bytes, *, expect_stored: bool = True) -> None:
        self.sent[key] = raw
        store = Store.from_url(self.settings.database_url.get_secret_value())
        store.upgrade()
        try:
            asyncio.run(_send_over_mllp(store, raw))
        finally:
            store.dispose()


async def _send_over_mllp(store: Store, raw: bytes) -> bytes:
    """Start the real listener on a free port, send one framed message, return the ACK."""
    async with MllpListener(store, MllpListenerConfig(port=0)) as listener:
        reader, writer = await asyncio.open_connection(*listener.address)
        writer.write(frame(raw))
        await writer.drain()
        ack = await reader.readuntil(END_BLOCK)
        writer.close()
        await writer.wait_closed()
    return ack


class WfdbFeed:
    name = "wfdb"

    def __init__(self, tmp_path: Path) -> None:
        self.folder = tmp_path / "drop"
        self.folder.mkdir(parents=True)
        self.section = f'[sources.wfdb]\nenabled = true\npath = "{self.folder}"\nsettle_s = 0\n'
        self.settings = settings_for(tmp_path, self.section)

    def deliver(self, key: str, record: EcgRecord, *, time_text: str) -> None:
        base = write_wfdb(record, self.folder, key)
        header = base.with_suffix(".hea")
        first, *rest = header.read_text().splitlines()
        fields = first.split()[:4] + time_text.split()  # name, leads, fs, samples, then base time [date]
        header.write_text("\n".join([" ".join(fields), *rest]) + "\n")

    def deliver_poison(self, key: str) -> None:
        base = write_wfdb(ecg(0), self.folder, key)
        data = base.with_suffix(".dat")
        data.write_bytes(data.read_bytes()[:1000])  # a truncated copy

    def deliver_again(self, key: str) -> None:
        for path in self.folder.glob(f"{key}.*"):
            path.write_bytes(path.read_bytes())  # copied in again: new change times, same content


@pytest.fixture(params=["fhir", "hl7", "wfdb"])
def feed(request, tmp_path, artifact_factory) -> Iterator[Feed]:
    if request.param == "fhir":
        made: Feed = FhirFeed(request.getfixturevalue("fhir_base_url"), tmp_path)
    elif request.param == "hl7":
        made = Hl7Feed(tmp_path)
    else:
        made = WfdbFeed(tmp_path)
    store = Store.from_url(made.settings.database_url.get_secret_value())
    store.upgrade()
    registry = ModelRegistry(store, made.settings.registry_dir, actor="test")
    registry.register(artifact_factory("1.0.0"))
    registry.promote("1.0.0", reason="contract test")
    store.dispose()
    yield made
    if isinstance(made, FhirFeed):
        made.client.close()

"""WFDB files ↔ the canonical record.

Reading goes through the ``wfdb`` package, so any WFDB variant a site has (other
formats, multi-segment headers) reads. Writing is our own: one 12-lead, 10 s record
as MIMIC-IV-ECG stores it (format 16, 200 adu/mV, baseline 0), written with numpy
because ``wfdb.wrsamp`` is several times slower and the simulator writes thousands.
The data file is written before the header and both under temporary names, so a
crash never leaves a header that points at a partial signal.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, tzinfo
from pathlib import Path

import numpy as np
import wfdb

from integrations.ecg import MIMIC_FILE_LEAD_ORDER, EcgRecord, canonical_lead_name, select_leads
from integrations.errors import EcgReadError
from integrations.site_time import SourceTime, place_wall_time

#: The sample value format 16 reserves for "no data".
WFDB_NAN_16 = -32768
MIMIC_ADC_GAIN = 200.0
_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3}


def read_wfdb(
    record_path: Path,
    *,
    record_id: str | None = None,
    subject_id: str | None = None,
    source: str = "wfdb",
    site_tz: tzinfo = UTC,
) -> EcgRecord:
    """Read ``record_path`` (no extension) into an :class:`EcgRecord` in mV; missing samples become NaN.

    A header's base time and date are the recording device's local time, placed with ``site_tz`` (the
    DST rules of :mod:`integrations.site_time`). Without a base date the time of day alone cannot be
    placed: ``acquired_at`` is None, and ``acquired_at_text`` still keeps what the header says.
    """
    record_id = record_id or record_path.name
    header = record_path.with_suffix(".hea")
    if not header.exists():
        raise EcgReadError(str(header), "file not found")
    try:
        record = wfdb.rdrecord(str(record_path))
    except FileNotFoundError as exc:
        raise EcgReadError(str(record_path), f"file not found: {Path(exc.filename or '').name}") from exc
    except (ValueError, IndexError, TypeError, OSError, AttributeError) as exc:
        # wfdb reports a corrupt header or a short data file with whatever numpy raised.
        raise EcgReadError(str(record_path), f"corrupt or truncated WFDB record: {exc}") from exc
    if record.p_signal is None:
        raise EcgReadError(str(record_path), "record holds no signal")
    signal_mv = np.asarray(record.p_signal, dtype=np.float64).T * _unit_factors(record_path, record.units)[:, None]
    time_text = _base_time_text(header)
    acquired = _acquired_at(record, time_text or "", site_tz)
    return EcgRecord(
        record_id=record_id,
        signal_mv=signal_mv,
        fs_hz=float(record.fs),
        lead_names=tuple(canonical_lead_name(name) for name in record.sig_name),
        source=source,
        subject_id=subject_id,
        acquired_at=acquired.utc if acquired else None,
        acquired_at_text=time_text,
    )


def _unit_factors(record_path: Path, units: list[str]) -> np.ndarray:
    factors = []
    for unit in units:
        factor = _TO_MV.get((unit or "mV").strip().lower())
        if factor is None:
            raise EcgReadError(str(record_path), f"unknown signal unit {unit!r}")
        factors.append(factor)
    return np.array(factors)


def _acquired_at(record: wfdb.Record, text: str, site_tz: tzinfo) -> SourceTime | None:
    if record.base_date is None or record.base_time is None:
        return None
    return place_wall_time(datetime.combine(record.base_date, record.base_time), text, site_tz)


def _base_time_text(header: Path) -> str | None:
    """The base time and date fields of the header's record line, verbatim (``08:44:00 23/07/2180``)."""
    for line in header.read_text(errors="replace").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            fields = line.split()[4:6]  # name, signals, rate, length, then [base time [base date]]
            return " ".join(fields) or None
    return None


def write_wfdb(
    record: EcgRecord,
    record_dir: Path,
    record_name: str,
    *,
    lead_order: tuple[str, ...] = MIMIC_FILE_LEAD_ORDER,
    adc_gain: float = MIMIC_ADC_GAIN,
) -> Path:
    """Write ``record_dir/record_name.{dat,hea}`` (format 16) in ``lead_order``; returns the path without extension."""
    record_dir.mkdir(parents=True, exist_ok=True)
    signal = select_leads(record, lead_order)
    digital = np.round(signal * adc_gain)
    digital = np.where(np.isnan(digital), WFDB_NAN_16, np.clip(digital, WFDB_NAN_16 + 1, 32767)).astype("<i2")
    base = record_dir / record_name
    _atomic_write(base.with_suffix(".dat"), digital.T.tobytes())  # sample-major: all leads of sample 0 first
    _atomic_write(base.with_suffix(".hea"), _header(record, record_name, lead_order, digital, adc_gain).encode())
    return base


def _header(
    record: EcgRecord, record_name: str, lead_order: tuple[str, ...], digital: np.ndarray, adc_gain: float
) -> str:
    fs = f"{record.fs_hz:g}"
    first = f"{record_name} {len(lead_order)} {fs} {digital.shape[1]}"
    if record.acquired_at is not None:
        first += f" {record.acquired_at:%H:%M:%S} {record.acquired_at:%d/%m/%Y}"
    lines = [first]
    for lead, samples in zip(lead_order, digital, strict=True):
        checksum = int(samples.astype(np.int64).sum()) & 0xFFFF
        checksum = checksum - 0x10000 if checksum >= 0x8000 else checksum
        lines.append(f"{record_name}.dat 16 {adc_gain:g}(0)/mV 16 0 {int(samples[0])} {checksum} 0 {lead}")
    return "\n".join(lines) + "\n"


def _atomic_write(path: Path, payload: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(payload)
    os.replace(temporary, path)

"""Write the input corpus: ECGs the way outside systems send them, built by hand, and ``cases.csv``.

Run from the repository root (the generated files are committed; tests read them, never this script)::

    python tests/corpus/make_corpus.py --wfdb-sample-data PATH/TO/wfdb-python/sample-data

Nothing here calls our own encoders (``encode_ecg_oru``, ``ecg_to_observation``, ``write_wfdb``): the point
of the corpus is input we did not write (the styles are in vendor_styles.py). Signals are real: the 12-lead,
1000 Hz, 10 s recording pydicom ships (``waveform_ecg.dcm``), resampled where a case needs another rate
(5 s at 500 Hz keeps the corpus small), and two records of wfdb-python's sample data (PTB ``s0010_re``,
MIT-BIH ``100``) cropped to 10 s with ``wfdb.wrsamp``. The expected UTC times in :data:`TABLE` are worked
out by hand for the site zone America/New_York (the one the corpus test uses), not by the code under test.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import wfdb
from vendor_styles import (
    LEADS,
    at_rate,
    coding,
    data_absent,
    mortara,
    muse,
    observation,
    pcd01,
    philips,
    real_ecg_uv,
    replace_data,
    sampled,
    twelve_leads,
)

CORPUS = Path(__file__).resolve().parent
COLUMNS = ("case", "source", "path", "outcome", "reason", "fs_hz", "n_leads", "acquired_at_utc", "note")

#: Every case: outcome at the agent, quarantine reason prefix, what the decoder must give, and why it is here.
TABLE = """
hl7-pcd01-offset             |scored        |                       |500 |12|2026-11-20T08:14:00+00:00|IHE PCD-01: MDC codes, OBX-4 tree, OBR-7 with offset
hl7-pcd01-naive-time         |scored        |                       |500 |12|2026-11-20T08:14:00+00:00|OBR-7 without offset (the HL7 v2 norm): site zone, EST
hl7-pcd01-dst-gap            |scored        |                       |500 |12|2026-03-08T07:30:00+00:00|02:30 does not exist in New York that night: read as EST
hl7-pcd01-dst-overlap        |scored        |                       |500 |12|2026-11-01T05:30:00+00:00|01:30 happens twice that night: the first one (EDT)
hl7-pcd01-date-only          |scored        |                       |500 |12|2026-11-20T05:00:00+00:00|day precision: local midnight
hl7-pcd01-extra-leads        |scored        |                       |500 |12|2026-11-20T08:14:00+00:00|V3R/V4R/V7 NA OBXs beside the 12: ignored
hl7-pcd01-invalid-time       |quarantined   |invalid-time           |    |  |                         |ISO 8601 text in OBR-7 is not a DTM
hl7-pcd01-month-13           |quarantined   |invalid-time           |    |  |                         |month 13
hl7-muse-250hz               |scored        |                       |250 |12|2026-11-20T08:14:00+00:00|MUSE-like v2.4, 8859/1 names, one rate/resolution OBX, minute precision
hl7-muse-v23                 |quarantined   |unsupported            |    |  |                         |HL7 v2.3 (older interfaces) is not read
hl7-mortara-1000hz-real      |scored        |                       |1000|12|2026-11-20T02:14:00.123000+00:00|Mortara-like: UTF-8 µV, Z-segment, escapes, ED PDF; pydicom's real ECG
hl7-philips-latin1-ts        |scored        |                       |500 |12|2026-11-20T08:14:00+00:00|Philips-like: µV as a Latin-1 byte, no resolution OBX, TS ^precision, ED XML
hl7-philips-hex-escaped-unit |scored        |                       |500 |12|2026-11-20T08:00:00+00:00|unit sent as the hex escape \\XB5\\V; hour precision
hl7-philips-uv-sent-as-mv    |quarantined   |implausible-amplitude  |500 |12|2026-11-20T08:14:00+00:00|µV values labelled mV: decodes 1000x too large, the agent refuses
hl7-philips-no-v6            |quarantined   |missing-leads          |    |  |                         |11 leads
hl7-truncated                |quarantined   |malformed              |    |  |                         |cut inside the last lead's samples
hl7-garbage                  |quarantined   |malformed              |    |  |                         |an HTTP request sent to the MLLP port
fhir-mdc-offset              |scored        |                       |500 |12|2026-11-20T02:14:00+00:00|MDC lead codes, dateTime with offset
fhir-date-only               |scored        |                       |500 |12|2026-11-20T05:00:00+00:00|valid R4 date: local midnight (EST)
fhir-month-only              |scored        |                       |500 |12|2026-11-01T04:00:00+00:00|valid R4 partial date: 1 Nov local midnight (still EDT)
fhir-year-only               |scored        |                       |500 |12|2026-01-01T05:00:00+00:00|valid R4 partial date: 1 Jan local midnight
fhir-time-without-offset     |scored        |                       |500 |12|2026-11-20T08:14:00+00:00|invalid R4 but real servers send it: site zone
fhir-dst-gap                 |scored        |                       |500 |12|2026-03-08T07:30:00+00:00|02:30 does not exist in New York that night: read as EST
fhir-dst-overlap             |scored        |                       |500 |12|2026-11-01T05:30:00+00:00|01:30 happens twice that night: the first one (EDT)
fhir-period                  |scored        |                       |500 |12|2026-11-20T03:14:00+00:00|effectivePeriod instead of effectiveDateTime
fhir-instant                 |scored        |                       |500 |12|2026-11-20T08:14:00.250000+00:00|effectiveInstant with milliseconds
fhir-loinc-contained-patient |scored        |                       |500 |12|2026-11-20T02:14:00+00:00|LOINC LP lead codes only, subject is a contained Patient
fhir-snomed-beside-mdc       |scored        |                       |500 |12|2026-11-20T02:14:00+00:00|SNOMED CT lead coding first, MDC beside it
fhir-1000hz-15-leads-real    |scored        |                       |1000|12|2026-11-20T02:14:00+00:00|pydicom's real ECG, 1.25 µV counts; 3 extra local-coded leads ignored
fhir-lead-ii-all-e           |scored-imputed|                       |500 |12|2026-11-20T02:14:00+00:00|lead II all E: NaN, imputed from the other limb leads
fhir-v3-data-absent          |scored-imputed|                       |500 |12|2026-11-20T02:14:00+00:00|V3 component with dataAbsentReason: a NaN lead, dropped
fhir-l-u-limits              |scored-imputed|                       |500 |12|2026-11-20T02:14:00+00:00|L/U beyond ±1.5 mV read as the limits: V5's R waves flat-topped (clipped)
fhir-200-volts               |quarantined   |implausible-amplitude  |500 |12|2026-11-20T02:14:00+00:00|±1e5 mV swings: 200 V peak to peak
fhir-non-finite              |quarantined   |non-finite             |500 |12|2026-11-20T02:14:00+00:00|1e999 overflows to inf in 3 leads
fhir-50hz                    |quarantined   |implausible-rate       |50  |12|2026-11-20T02:14:00+00:00|50 Hz: below the model's rate
fhir-four-leads-all-e        |quarantined   |too-many-unusable-leads|500 |12|2026-11-20T02:14:00+00:00|V1-V4 all E
fhir-missing-v6              |quarantined   |missing-leads          |    |  |                         |no V6 component
fhir-invalid-time            |quarantined   |invalid-time           |    |  |                         |a printed date, not R4
fhir-no-components           |quarantined   |no-components          |    |  |                         |an ECG Observation without components
wfdb-ptb-fmt16-no-base-date  |scored        |                       |1000|15|                         |PTB s0010_re: 12 leads + Frank vx/vy/vz, 2000 adu/mV, no base time or date
wfdb-mitdb-fmt212-two-leads  |quarantined   |missing-leads          |    |  |                         |MIT-BIH 100: format 212, baseline 1024, MLII and V5 only
wfdb-ptb-fmt212-gain-baseline|scored        |                       |1000|12|2026-11-20T08:14:00+00:00|PTB leads in format 212 at 500 adu/mV, baseline -200; base time and date
wfdb-fmt212-dst-gap          |scored        |                       |1000|12|2026-03-08T07:30:00+00:00|as above; base time 02:30 on the spring-forward night
wfdb-fmt212-time-without-date|scored        |                       |1000|12|                         |as above; base time without a date: not placed, text kept
wfdb-ptb-truncated-dat       |quarantined   |malformed              |    |  |                         |PTB crop whose .dat was cut to 100 kB (a copy that died)
"""  # noqa: E501


def hl7_messages(real_uv: np.ndarray) -> dict[str, bytes]:
    at_500, at_250 = at_rate(real_uv, 500, 5.0), at_rate(real_uv, 250, 10.0)
    builders: dict[str, Callable[[str], bytes]] = {
        "hl7-pcd01-offset": lambda cid: pcd01(cid, "20261120031400-0500", at_500, 500),
        "hl7-pcd01-naive-time": lambda cid: pcd01(cid, "20261120031400", at_500, 500),
        "hl7-pcd01-dst-gap": lambda cid: pcd01(cid, "20260308023000", at_500, 500),
        "hl7-pcd01-dst-overlap": lambda cid: pcd01(cid, "20261101013000", at_500, 500),
        "hl7-pcd01-date-only": lambda cid: pcd01(cid, "20261120", at_500, 500),
        "hl7-pcd01-extra-leads": lambda cid: pcd01(cid, "20261120031400-0500", at_500, 500, extra_leads=True),
        "hl7-pcd01-invalid-time": lambda cid: pcd01(cid, "2026-11-20T03:14", at_500, 500),
        "hl7-pcd01-month-13": lambda cid: pcd01(cid, "20261320031400", at_500, 500),
        "hl7-muse-250hz": lambda cid: muse(cid, "202611200314", at_250),
        "hl7-muse-v23": lambda cid: muse(cid, "202611200314", at_250, version="2.3"),
        "hl7-mortara-1000hz-real": lambda cid: mortara(cid, "20261120031400.123+0100", real_uv),
        "hl7-philips-latin1-ts": lambda cid: philips(cid, "20261120031400^S", at_500),
        "hl7-philips-hex-escaped-unit": lambda cid: philips(cid, "2026112003", at_500, unit="\\XB5\\V"),
        "hl7-philips-uv-sent-as-mv": lambda cid: philips(cid, "20261120031400", at_500, unit="mV"),
        "hl7-philips-no-v6": lambda cid: philips(cid, "20261120031400", at_500, leads=LEADS[:11]),
        "hl7-truncated": lambda cid: _truncated(pcd01(cid, "20261120031400", at_500, 500)),
        "hl7-garbage": lambda cid: b"\x0bGET / HTTP/1.1\r\nHost: ecg\r\n\r\n\x1c\r",
    }
    return {case: build(case) for case, build in builders.items()}


def _truncated(message: bytes) -> bytes:
    return message[: message.rindex(b"|NA|") + 4000]


def fhir_observations(real_uv: np.ndarray) -> dict[str, dict]:
    at_500, at_50 = at_rate(real_uv, 500, 5.0), at_rate(real_uv, 50, 10.0)
    offset = {"effectiveDateTime": "2026-11-20T03:14:00+01:00"}
    n = at_500.shape[1]
    patient = {"resourceType": "Patient", "id": "pat", "identifier": [{"system": "urn:mrn", "value": "MRN-77"}]}
    extra_leads = [
        {"code": {"coding": [coding("urn:oid:1.2.3.4.5.local-leads", name, f"Lead {name}")]},
         "valueSampledData": sampled(real_uv[row], 1000, factor=1.25)}
        for name, row in (("V3R", 8), ("V4R", 9), ("V7", 11))
    ]  # fmt: skip
    swing_uv = np.where(np.arange(n) % 2, 1e8, -1e8)  # 1e8 µV = 1e5 mV
    absent_v3 = twelve_leads(at_500, 500)
    absent_v3[8] = data_absent(absent_v3[8])
    builders: dict[str, Callable[[str], dict]] = {
        "fhir-mdc-offset": lambda oid: observation(oid, twelve_leads(at_500, 500), offset),
        "fhir-date-only": lambda oid: observation(oid, twelve_leads(at_500, 500), {"effectiveDateTime": "2026-11-20"}),
        "fhir-month-only": lambda oid: observation(oid, twelve_leads(at_500, 500), {"effectiveDateTime": "2026-11"}),
        "fhir-year-only": lambda oid: observation(oid, twelve_leads(at_500, 500), {"effectiveDateTime": "2026"}),
        "fhir-time-without-offset": lambda oid: observation(
            oid, twelve_leads(at_500, 500), {"effectiveDateTime": "2026-11-20T03:14:00"}
        ),
        "fhir-dst-gap": lambda oid: observation(
            oid, twelve_leads(at_500, 500), {"effectiveDateTime": "2026-03-08T02:30:00"}
        ),
        "fhir-dst-overlap": lambda oid: observation(
            oid, twelve_leads(at_500, 500), {"effectiveDateTime": "2026-11-01T01:30:00"}
        ),
        "fhir-period": lambda oid: observation(
            oid,
            twelve_leads(at_500, 500),
            {"effectivePeriod": {"start": "2026-11-20T03:14:00Z", "end": "2026-11-20T03:14:10Z"}},
        ),
        "fhir-instant": lambda oid: observation(
            oid, twelve_leads(at_500, 500), {"effectiveInstant": "2026-11-20T08:14:00.250Z"}
        ),
        "fhir-loinc-contained-patient": lambda oid: observation(
            oid, twelve_leads(at_500, 500, ("loinc",)), offset, contained=[patient], subject={"reference": "#pat"}
        ),
        "fhir-snomed-beside-mdc": lambda oid: observation(oid, twelve_leads(at_500, 500, ("snomed", "mdc")), offset),
        "fhir-1000hz-15-leads-real": lambda oid: observation(
            oid, twelve_leads(real_uv, 1000, factor=1.25) + extra_leads, offset
        ),
        "fhir-lead-ii-all-e": lambda oid: observation(
            oid, replace_data(twelve_leads(at_500, 500), (1,), lambda tokens: ["E"] * len(tokens)), offset
        ),
        "fhir-v3-data-absent": lambda oid: observation(oid, absent_v3, offset),
        "fhir-l-u-limits": lambda oid: observation(
            oid,
            replace_data(
                twelve_leads(at_500, 500, unit="mV", factor=0.001, lowerLimit=-1.5, upperLimit=1.5),
                range(12),
                lambda tokens: ["U" if int(t) > 1500 else "L" if int(t) < -1500 else t for t in tokens],
            ),
            offset,
        ),
        "fhir-200-volts": lambda oid: observation(oid, twelve_leads(at_500 + swing_uv, 500), offset),
        "fhir-non-finite": lambda oid: observation(
            oid,
            replace_data(twelve_leads(at_500, 500, unit="mV", factor=0.001), range(3), lambda t: ["1e999", *t[1:]]),
            offset,
        ),
        "fhir-50hz": lambda oid: observation(oid, twelve_leads(at_50, 50), offset),
        "fhir-four-leads-all-e": lambda oid: observation(
            oid, replace_data(twelve_leads(at_500, 500), range(6, 10), lambda tokens: ["E"] * len(tokens)), offset
        ),
        "fhir-missing-v6": lambda oid: observation(oid, twelve_leads(at_500, 500)[:11], offset),
        "fhir-invalid-time": lambda oid: observation(
            oid, twelve_leads(at_500, 500), {"effectiveDateTime": "20/11/2026 03:14"}
        ),
        "fhir-no-components": lambda oid: observation(oid, [], offset),
    }
    return {case: build(case) for case, build in builders.items()}


def wfdb_records(sample_data: Path) -> dict[str, str]:
    """Crops of two real sample records, and the PTB 12 leads rewritten in format 212; case → record path."""
    ptb = wfdb.rdrecord(str(sample_data / "s0010_re"), sampto=10_000, physical=False)  # 10 s at 1000 Hz
    mitdb = wfdb.rdrecord(str(sample_data / "100"), sampto=3_600, physical=False)  # 10 s at 360 Hz
    paths = {
        "wfdb-ptb-fmt16-no-base-date": _crop("wfdb-ptb-fmt16-no-base-date", ptb, ptb.d_signal),
        "wfdb-mitdb-fmt212-two-leads": _crop("wfdb-mitdb-fmt212-two-leads", mitdb, mitdb.d_signal),
        "wfdb-ptb-truncated-dat": _crop("wfdb-ptb-truncated-dat", ptb, ptb.d_signal),
    }
    data_file = CORPUS / f"{paths['wfdb-ptb-truncated-dat']}.dat"
    data_file.write_bytes(data_file.read_bytes()[:100_000])
    # Other gain, other baseline: 500 adu/mV around -200, in 12 bits.
    digital_212 = np.clip(np.rint(ptb.d_signal[:, :12] / 2000.0 * 500.0) - 200, -2047, 2047).astype(np.int64)
    twelve = wfdb.Record(
        record_name="s0010_212", fs=1000, units=ptb.units[:12], sig_name=ptb.sig_name[:12], comments=ptb.comments,
        fmt=["212"] * 12, adc_gain=[500.0] * 12, baseline=[-200] * 12,
    )  # fmt: skip
    for case, time_text, date_text in (
        ("wfdb-ptb-fmt212-gain-baseline", "03:14:00", "20/11/2026"),
        ("wfdb-fmt212-dst-gap", "02:30:00", "08/03/2026"),
        ("wfdb-fmt212-time-without-date", "03:14:00", None),
    ):
        paths[case] = _crop(case, twelve, digital_212)
        _set_base_time(CORPUS / f"{paths[case]}.hea", time_text, date_text)
    return paths


def _crop(case: str, record: wfdb.Record, d_signal: np.ndarray) -> str:
    folder = CORPUS / "wfdb" / case
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():
        stale.unlink()
    wfdb.wrsamp(record.record_name, fs=record.fs, units=record.units, sig_name=record.sig_name, d_signal=d_signal,
                fmt=record.fmt, adc_gain=record.adc_gain, baseline=record.baseline, comments=record.comments,
                write_dir=str(folder))  # fmt: skip
    return f"wfdb/{case}/{record.record_name}"


def _set_base_time(header: Path, time_text: str, date_text: str | None) -> None:
    """Add a base time (and date) to the record line, as a cart that knows its clock writes it."""
    lines = header.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    lines[index] = " ".join([*lines[index].split()[:4], time_text, *([date_text] if date_text else [])])
    header.write_text("\n".join(lines) + "\n")


def write_files(real_uv: np.ndarray, sample_data: Path) -> dict[str, str]:
    """Write every case's file; case → path relative to the corpus folder."""
    paths = {}
    for case, message in hl7_messages(real_uv).items():
        paths[case] = f"hl7/{case}.hl7"
        (CORPUS / "hl7").mkdir(exist_ok=True)
        (CORPUS / paths[case]).write_bytes(message)
    for case, resource in fhir_observations(real_uv).items():
        paths[case] = f"fhir/{case}.json"
        (CORPUS / "fhir").mkdir(exist_ok=True)
        text = json.dumps(resource, ensure_ascii=False, separators=(",", ":")) + "\n"
        (CORPUS / paths[case]).write_text(text, encoding="utf-8")
    return paths | wfdb_records(sample_data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wfdb-sample-data", type=Path, required=True, help="wfdb-python's sample-data folder")
    args = parser.parse_args()
    paths = write_files(real_ecg_uv(), args.wfdb_sample_data)
    rows = [[cell.strip() for cell in line.split("|")] for line in TABLE.strip().splitlines()]
    assert sorted(row[0] for row in rows) == sorted(paths), "TABLE and the written files disagree"
    with (CORPUS / "cases.csv").open("w", newline="", encoding="utf-8") as table:
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(COLUMNS)
        for case, outcome, reason, fs_hz, n_leads, utc, note in rows:
            writer.writerow([case, case.split("-")[0], paths[case], outcome, reason, fs_hz, n_leads, utc, note])
    sizes = {path: path.stat().st_size for path in CORPUS.rglob("*") if path.is_file()}
    largest = max(sizes, key=sizes.__getitem__)
    print(
        f"{len(rows)} cases, {sum(sizes.values()) / 1e6:.2f} MB, largest {largest.name} {sizes[largest] / 1e6:.2f} MB"
    )


if __name__ == "__main__":
    main()

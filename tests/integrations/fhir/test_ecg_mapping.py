"""Decoding ECG Observations: SampledData arithmetic, units, special tokens, any rate, and every rejection reason."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.errors import InvalidEcgError
from integrations.fhir import (
    EcgPullConfig,
    EcgRejectReason,
    InvalidEcgObservation,
    PulledEcg,
    ecg_to_observation,
    observation_to_ecg,
)
from integrations.fhir.ecg_leads import LEAD_BY_LOINC_CODE, LEAD_BY_SNOMED_CODE
from integrations.fhir.ecg_mapping import LEAD_BY_MDC_CODE, MDC_CODE_BY_LEAD, MDC_SYSTEM
from integrations.fhir.pull import read_ecg_observation


def lead_component(lead: str, data: str, **sampled: object) -> dict:
    value = {"origin": {"value": 0, "unit": "mV", "code": "mV"}, "period": 2, "factor": 1, "data": data} | sampled
    return {"code": {"coding": [{"system": MDC_SYSTEM, "code": MDC_CODE_BY_LEAD[lead]}]}, "valueSampledData": value}


def ecg_observation(data: str = "1 2 3", **sampled: object) -> dict:
    return {
        "resourceType": "Observation",
        "id": "obs-1",
        "meta": {"versionId": "1", "lastUpdated": "2024-05-01T08:31:00.000Z"},
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "11524-6"}]},
        "subject": {"reference": "Patient/p7"},
        "effectiveDateTime": "2024-05-01T08:30:00+02:00",
        "component": [lead_component(lead, data, **sampled) for lead in MODEL_LEAD_ORDER],
    }


def rejection_of(observation: dict) -> EcgRejectReason:
    with pytest.raises(InvalidEcgObservation) as caught:
        observation_to_ecg(observation)
    assert caught.value.observation_id == "obs-1"
    return caught.value.reject_reason


def test_the_mdc_lead_codes_cover_the_twelve_standard_leads():
    assert sorted(LEAD_BY_MDC_CODE.values()) == sorted(MODEL_LEAD_ORDER)
    assert LEAD_BY_MDC_CODE["131329"] == "I" and LEAD_BY_MDC_CODE["131392"] == "aVF"


def test_values_are_origin_plus_factor_times_data_in_millivolts():
    record = observation_to_ecg(ecg_observation("10 -20 30", origin={"value": 0.5, "code": "mV"}, factor=0.01))

    np.testing.assert_allclose(record.signal_mv[0], [0.6, 0.3, 0.8])


def test_the_record_carries_id_version_subject_time_and_lead_order():
    record = observation_to_ecg(ecg_observation())

    assert record.record_id == "obs-1"
    assert record.source_version == "1"
    assert record.subject_id == "p7"
    assert record.acquired_at == datetime(2024, 5, 1, 6, 30, tzinfo=UTC)
    assert record.lead_names == MODEL_LEAD_ORDER


@pytest.mark.parametrize(("unit", "mv"), [("uV", 0.001), ("µV", 0.001), ("V", 1000.0), ("mV", 1.0)])
def test_microvolts_and_volts_are_converted_to_millivolts(unit, mv):
    record = observation_to_ecg(ecg_observation("1 2", origin={"value": 0, "unit": unit}))

    np.testing.assert_allclose(record.signal_mv[0], [mv, 2 * mv])


@pytest.mark.parametrize("fs_hz", [250.0, 360.0, 500.0, 1000.0])
def test_any_sampling_rate_decodes_from_the_period(fs_hz):
    record = observation_to_ecg(ecg_observation(period=1000.0 / fs_hz))

    assert record.fs_hz == pytest.approx(fs_hz)


def test_error_tokens_become_nan_and_limit_tokens_become_the_limits():
    observation = ecg_observation("1 E L U 2", factor=0.5, lowerLimit=-3.0, upperLimit=4.0)

    values = observation_to_ecg(observation).signal_mv[0]

    np.testing.assert_array_equal(np.isnan(values), [False, True, False, False, False])
    np.testing.assert_allclose(values[[0, 2, 3, 4]], [0.5, -3.0, 4.0, 1.0])


def test_limit_tokens_without_limits_are_unknown_values():
    values = observation_to_ecg(ecg_observation("L 1 U")).signal_mv[0]

    np.testing.assert_array_equal(np.isnan(values), [True, False, True])


def test_decimals_and_exponents_decode_like_integers():
    values = observation_to_ecg(ecg_observation("1.5 -2.25 1e2 3E-1")).signal_mv[0]

    np.testing.assert_allclose(values, [1.5, -2.25, 100.0, 0.3])


def test_components_that_are_not_leads_are_ignored():
    observation = ecg_observation()
    observation["component"].append({"code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}})

    assert observation_to_ecg(observation).lead_names == MODEL_LEAD_ORDER


@pytest.mark.parametrize(
    ("system", "codes"),
    [
        ("http://loinc.org", LEAD_BY_LOINC_CODE),
        ("http://snomed.info/sct", LEAD_BY_SNOMED_CODE),
        ("urn:iso:std:iso:11073:10101", LEAD_BY_MDC_CODE),
    ],
)
def test_leads_coded_in_loinc_snomed_or_the_mdc_uri_decode_like_mdc(system, codes):
    observation = ecg_observation()
    code_of = {lead: code for code, lead in codes.items()}
    for component, lead in zip(observation["component"], MODEL_LEAD_ORDER, strict=True):
        component["code"] = {"coding": [{"system": system, "code": code_of[lead]}]}

    assert observation_to_ecg(observation).lead_names == MODEL_LEAD_ORDER
    assert sorted(codes.values()) == sorted(MODEL_LEAD_ORDER)


def test_a_lead_with_a_data_absent_reason_is_a_nan_lead_not_a_rejection():
    observation = ecg_observation("1 2 3")
    observation["component"][1] = {
        "code": observation["component"][1]["code"],
        "dataAbsentReason": {"coding": [{"code": "not-performed"}]},
    }

    record = observation_to_ecg(observation)

    assert np.isnan(record.signal_mv[1]).all() and record.signal_mv.shape == (12, 3)
    assert not np.isnan(record.signal_mv[0]).any()


def test_every_lead_absent_is_missing_leads():
    observation = ecg_observation()
    observation["component"] = [
        {"code": c["code"], "dataAbsentReason": {"text": "lead off"}} for c in observation["component"]
    ]

    assert rejection_of(observation) == EcgRejectReason.MISSING_LEADS


def test_a_contained_patient_gives_its_identifier_as_subject():
    observation = ecg_observation() | {
        "contained": [{"resourceType": "Patient", "id": "p", "identifier": [{"value": "MRN-1"}]}],
        "subject": {"reference": "#p"},
    }

    assert observation_to_ecg(observation).subject_id == "MRN-1"


@pytest.mark.parametrize(
    ("effective", "text", "utc"),
    [
        ({"effectiveDateTime": "2026-11-20"}, "2026-11-20", datetime(2026, 11, 19, 23, tzinfo=UTC)),
        ({"effectiveDateTime": "2026-11"}, "2026-11", datetime(2026, 10, 31, 23, tzinfo=UTC)),
        (
            {"effectiveInstant": "2026-11-20T03:14:00Z"},
            "2026-11-20T03:14:00Z",
            datetime(2026, 11, 20, 3, 14, tzinfo=UTC),
        ),
        (
            {"effectivePeriod": {"start": "2026-11-20T03:14"}},
            "2026-11-20T03:14",
            datetime(2026, 11, 20, 2, 14, tzinfo=UTC),
        ),
    ],
)
def test_dates_and_times_without_offset_are_placed_in_the_site_zone(effective, text, utc):
    observation = {key: value for key, value in ecg_observation().items() if key != "effectiveDateTime"} | effective

    record = observation_to_ecg(observation, site_tz=ZoneInfo("Europe/Berlin"))

    assert (record.acquired_at, record.acquired_at_text) == (utc, text)


def without_lead(lead: str) -> dict:
    observation = ecg_observation()
    observation["component"] = [
        c for c in observation["component"] if c["code"]["coding"][0]["code"] != MDC_CODE_BY_LEAD[lead]
    ]
    return observation


def with_lead_changed(index: int, **sampled: object) -> dict:
    observation = ecg_observation()
    observation["component"][index]["valueSampledData"] |= sampled
    return observation


def without_component_key(key: str) -> dict:
    observation = ecg_observation()
    del observation["component"][0]["valueSampledData"][key]
    return observation


def with_duplicate_lead() -> dict:
    observation = ecg_observation()
    observation["component"].append(copy.deepcopy(observation["component"][0]))
    return observation


REJECTIONS = {
    "no components": ({**ecg_observation(), "component": []}, EcgRejectReason.NO_COMPONENTS),
    "missing lead V4": (without_lead("V4"), EcgRejectReason.MISSING_LEADS),
    "lead I twice": (with_duplicate_lead(), EcgRejectReason.DUPLICATE_LEAD),
    "no data": (without_component_key("data"), EcgRejectReason.NO_SAMPLED_DATA),
    "two dimensions": (with_lead_changed(1, dimensions=2), EcgRejectReason.UNSUPPORTED_DIMENSIONS),
    "a longer lead": (with_lead_changed(2, data="1 2 3 4"), EcgRejectReason.LENGTH_MISMATCH),
    "another rate": (with_lead_changed(2, period=4), EcgRejectReason.RATE_MISMATCH),
    "unit mmHg": (with_lead_changed(0, origin={"value": 0, "code": "mm[Hg]"}), EcgRejectReason.UNKNOWN_UNITS),
    "no unit": (with_lead_changed(0, origin={"value": 0}), EcgRejectReason.UNKNOWN_UNITS),
    "letters": (with_lead_changed(0, data="1 x 3"), EcgRejectReason.NON_NUMERIC_DATA),
    "nan spelled out": (with_lead_changed(0, data="1 nan 3"), EcgRejectReason.NON_NUMERIC_DATA),
    "a broken decimal": (with_lead_changed(0, data="1 2.3.4 3"), EcgRejectReason.NON_NUMERIC_DATA),
    "non-ascii": (with_lead_changed(0, data="1 ２ 3"), EcgRejectReason.NON_NUMERIC_DATA),
    "factor 0": (with_lead_changed(0, factor=0), EcgRejectReason.BAD_FACTOR),
    "factor NaN": (with_lead_changed(0, factor=float("nan")), EcgRejectReason.BAD_FACTOR),
    "factor infinite": (with_lead_changed(0, factor=float("inf")), EcgRejectReason.BAD_FACTOR),
    "factor as text": (with_lead_changed(0, factor="0.5"), EcgRejectReason.BAD_FACTOR),
    "period 0": (with_lead_changed(0, period=0), EcgRejectReason.BAD_PERIOD),
    "period negative": (with_lead_changed(0, period=-2), EcgRejectReason.BAD_PERIOD),
    "no period": (without_component_key("period"), EcgRejectReason.BAD_PERIOD),
    "unreadable time": ({**ecg_observation(), "effectiveDateTime": "yesterday"}, EcgRejectReason.INVALID_TIME),
}


@pytest.mark.parametrize(("observation", "reason"), REJECTIONS.values(), ids=REJECTIONS.keys())
def test_each_unusable_observation_is_rejected_with_a_named_reason(observation, reason):
    assert rejection_of(observation) == reason


def test_a_rejection_is_an_invalid_ecg_error_naming_the_observation_and_lead():
    with pytest.raises(InvalidEcgError, match=r"ECG Observation 'obs-1': bad-factor: lead III"):
        observation_to_ecg(with_lead_changed(2, factor=0))


def test_encoding_then_decoding_keeps_the_signal_to_the_resolution_and_nan_as_error():
    signal_mv = np.linspace(-2.0, 2.0, 12 * 360).reshape(12, 360)
    signal_mv[4, 7] = np.nan
    record = EcgRecord("rec-9", signal_mv, 360.0, MODEL_LEAD_ORDER, acquired_at=datetime(2024, 1, 2, 3, 4, 5))

    observation = ecg_to_observation(record, subject_reference="Patient/p1") | {"id": "obs-1"}
    decoded = observation_to_ecg(observation)

    assert observation["component"][4]["valueSampledData"]["data"].split()[7] == "E"
    assert decoded.fs_hz == pytest.approx(360.0)
    assert decoded.acquired_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    np.testing.assert_allclose(decoded.signal_mv, signal_mv, atol=5e-4)


def test_encoding_a_lead_without_an_mdc_code_is_refused():
    record = EcgRecord("rec-x", np.zeros((1, 10)), 500.0, ("X",))

    with pytest.raises(InvalidEcgError, match="lead 'X' has no MDC lead code"):
        ecg_to_observation(record)


def test_the_pull_configs_site_zone_reaches_the_mapping():
    observation = ecg_observation() | {"effectiveDateTime": "2026-11-20"}

    pulled = read_ecg_observation(observation, EcgPullConfig(site_tz=ZoneInfo("America/New_York")))

    assert isinstance(pulled, PulledEcg)
    assert pulled.record.acquired_at == datetime(2026, 11, 20, 5, tzinfo=UTC)

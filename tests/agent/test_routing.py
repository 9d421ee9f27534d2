"""Where each source's results go is said plainly, and the run, config check and status agree on it."""

from __future__ import annotations

import json
import logging
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.cli import main
from agent.routing import source_routes, unrouted
from agent.service import AgentService, build_sinks
from agent.settings import load_settings
from agent.sinks.patients import PatientIdentifierSystems, PatientLookupError
from agent.sources import SOURCE_NAMES
from integrations.hl7.patient import PatientIdentifier
from integrations.store import EcgStudy, StoredStudy, StudyStatus

WFDB_ALONE = (
    "sources.wfdb: results are stored in SQL only — no enabled sink carries WFDB-sourced results; enable sinks.hl7"
)


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f'database_url = "sqlite:///{tmp_path / "agent.db"}"\nregistry_dir = "{tmp_path / "models"}"\n'
                    + body.replace("{drop}", str(tmp_path)))  # fmt: skip
    return path


EVERY_SOURCE_FHIR_SINK = """
[sources.fhir]
enabled = true
[sources.fhir.server]
base_url = "http://127.0.0.1:9/fhir"
[sources.hl7]
enabled = true
[sources.wfdb]
enabled = true
path = "{drop}"
[sinks.fhir]
enabled = true
"""


def test_with_only_the_fhir_sink_wfdb_results_reach_no_sink_and_the_route_says_what_to_enable(tmp_path):
    settings = load_settings(_config(tmp_path, EVERY_SOURCE_FHIR_SINK))
    assert [route.describe() for route in source_routes(settings)] == [
        "sources.fhir: results go to sinks.fhir and SQL",
        "sources.hl7: results go to sinks.fhir and SQL",
        WFDB_ALONE,
    ]


def test_turning_off_the_patient_lookup_leaves_hl7_results_in_sql(tmp_path):
    body = EVERY_SOURCE_FHIR_SINK + "hl7_patient_lookup = false\n"
    settings = load_settings(_config(tmp_path, body))
    assert [route.source for route in unrouted(settings)] == ["hl7", "wfdb"]
    assert unrouted(settings)[0].describe() == (
        "sources.hl7: results are stored in SQL only — no enabled sink carries HL7-sourced results; enable sinks.hl7"
    )


def test_the_hl7_sink_carries_every_source(tmp_path):
    body = EVERY_SOURCE_FHIR_SINK + '[sinks.hl7]\nenabled = true\nhost = "engine.local"\n'
    routes = source_routes(load_settings(_config(tmp_path, body)))
    assert [route.sinks for route in routes] == [("fhir", "hl7"), ("fhir", "hl7"), ("hl7",)]
    assert unrouted(load_settings(_config(tmp_path, body))) == []


@pytest.mark.parametrize("lookup", [True, False])
def test_the_built_sinks_accept_exactly_what_the_routes_report(tmp_path, store, lookup):
    body = EVERY_SOURCE_FHIR_SINK + f"hl7_patient_lookup = {str(lookup).lower()}\n"
    body += '[sinks.hl7]\nenabled = true\nhost = "engine.local"\n'
    settings = load_settings(_config(tmp_path, body))
    routes = {route.source: set(route.sinks) for route in source_routes(settings)}
    with ExitStack() as stack:
        sinks = build_sinks(settings, store, stack)
        accepted = {source: {s.destination for s in sinks if s.accepts(_study(source))} for source in SOURCE_NAMES}
    assert accepted == routes


def _study(source: str) -> StoredStudy:
    now = datetime.now(UTC)
    return StoredStudy(1, EcgStudy(source, "id", "1", 500.0, ("I",)), StudyStatus.NEW, None, now, now)


def test_config_check_names_the_source_without_a_sink_beside_the_json(tmp_path, capsys):
    assert main(["--config", str(_config(tmp_path, EVERY_SOURCE_FHIR_SINK)), "config", "check"]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out)["sources"]["wfdb"]["enabled"] is True  # stdout stays the settings, as JSON
    assert "where results go:\n" in printed.err and f"  {WFDB_ALONE}\n" in printed.err


def test_status_names_the_source_without_a_sink(tmp_path, capsys):
    assert main(["--config", str(_config(tmp_path, EVERY_SOURCE_FHIR_SINK)), "status"]) == 0
    assert f"  {WFDB_ALONE}\n" in capsys.readouterr().out


def test_run_once_logs_it_once_at_the_start(tmp_path, caplog):
    settings = load_settings(_config(tmp_path, '[sources.wfdb]\nenabled = true\npath = "{drop}"\n'))
    with caplog.at_level(logging.WARNING, logger="agent.service"):
        AgentService(settings).run_once(progress=False)  # no model: the run fails, after saying where results go
    assert [r.getMessage() for r in caplog.records if "SQL only" in r.getMessage()] == [WFDB_ALONE]


# --- PID-3's assigning authority → the FHIR identifier system ---------------------------------------------------

OID = "2.16.840.1.113883.3.72"


@pytest.mark.parametrize(
    ("identifier", "system"),
    [
        (PatientIdentifier("1", "HOSP", OID, "ISO"), f"urn:oid:{OID}"),
        (PatientIdentifier("1", "", "https://hospital.example/mrn", "URI"), "https://hospital.example/mrn"),
        (PatientIdentifier("1", "STMARYS"), "https://stmarys.example/mrn"),
        (PatientIdentifier("1", "STMARYS", OID, "ISO"), "https://stmarys.example/mrn"),  # the site's table wins
        (PatientIdentifier("1", "", "1.2.3.99", "ISO"), "urn:local:by-oid"),
        (PatientIdentifier("1"), "https://hospital.example/unassigned"),
    ],
    ids=["ISO OID", "URI", "namespace in the table", "table over OID", "OID in the table", "no authority"],
)
def test_the_system_comes_from_the_oid_the_uri_or_the_site_table(identifier, system):
    systems = PatientIdentifierSystems(
        {"STMARYS": "https://stmarys.example/mrn", "1.2.3.99": "urn:local:by-oid"},
        without_authority="https://hospital.example/unassigned",
    )
    assert systems.system_for(identifier) == system


@pytest.mark.parametrize(
    ("identifier", "says"),
    [
        (PatientIdentifier("1", "OTHERHOSP"), "assigning authority 'OTHERHOSP' has no FHIR identifier system"),
        (PatientIdentifier("1", "HOSP", "not-an-oid", "ISO"), "map it in sinks.fhir.patient_identifier_systems"),
        (PatientIdentifier("1"), "has no assigning authority (PID-3.4)"),
    ],
    ids=["unmapped namespace", "malformed OID", "no authority, no setting"],
)
def test_an_authority_that_cannot_be_mapped_is_never_guessed(identifier, says):
    with pytest.raises(PatientLookupError, match=says.replace("(", r"\(").replace(")", r"\)")):
        PatientIdentifierSystems().system_for(identifier)


@pytest.mark.parametrize(
    "line",
    ['patient_identifier_systems = { HOSP = "has spaces" }', 'patient_identifier_system_without_authority = "a|b"'],
)
def test_a_system_that_is_not_a_uri_is_refused_by_the_settings(tmp_path, line):
    with pytest.raises(ValueError, match="is not a URI"):
        load_settings(_config(tmp_path, f"[sinks.fhir]\n{line}\n"))

"""Migrations: the packaged Alembic scripts build exactly the schema the code queries, on both databases."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from integrations.store import Store, StoreMigrationError, StoreUnavailableError
from integrations.store.repository import MIGRATIONS_DIR
from integrations.store.schema import metadata


def _empty_database_url(request, tmp_path, dialect: str) -> str:
    if dialect == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return sa.make_url(request.getfixturevalue("postgres_url")).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_store(request, tmp_path):
    """A store on an empty database; emptied again afterwards, since the PostgreSQL one is shared."""
    store = Store.from_url(_empty_database_url(request, tmp_path, request.param))
    yield store
    metadata.drop_all(store.engine)
    with store.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    store.dispose()


@pytest.fixture
def migrated(empty_store):
    """A database migrated from empty, then to head a second time."""
    empty_store.upgrade()
    empty_store.upgrade()
    return empty_store


def test_upgrade_head_creates_every_table_of_the_schema_and_is_idempotent(migrated):
    tables = set(sa.inspect(migrated.engine).get_table_names())
    assert tables == set(metadata.tables) | {"alembic_version"}


def test_the_migrated_schema_matches_the_code_schema_so_autogenerate_has_nothing_to_add(migrated):
    with migrated.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


def test_an_unknown_revision_is_a_migration_error_naming_the_database(tmp_path):
    store = Store.from_url(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(StoreMigrationError, match=r"x\.db.*cannot upgrade to 9999"):
        store.upgrade("9999")


def test_an_unreachable_database_is_reported_as_unavailable(tmp_path):
    store = Store.from_url(f"sqlite:///{tmp_path / 'no-such-dir' / 'x.db'}")
    with pytest.raises(StoreUnavailableError, match="unable to open database file"):
        store.upgrade()


def test_processes_starting_together_on_an_empty_database_both_upgrade_it(empty_store):
    stores = [Store(empty_store.engine) for _ in range(3)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(Store.upgrade, stores))
    assert set(sa.inspect(empty_store.engine).get_table_names()) == set(metadata.tables) | {"alembic_version"}


def test_an_unreachable_postgresql_server_is_reported_as_unavailable():
    store = Store.from_url("postgresql+psycopg://postgres@127.0.0.1:1/nothing")
    with pytest.raises(StoreUnavailableError, match="watermark fhir"):
        store.get_watermark("fhir")


def test_a_database_at_the_first_revision_is_upgraded_to_head_keeping_its_rows(empty_store):
    empty_store.upgrade("0001")
    empty_store.advance_watermark("wfdb-feed:wfdb", "2026-01-01T00:00:00+00:00")
    empty_store.upgrade()
    assert "run_locks" in sa.inspect(empty_store.engine).get_table_names()
    assert empty_store.get_watermark("wfdb-feed:wfdb").value == "2026-01-01T00:00:00+00:00"


def test_quarantine_rows_repeating_an_item_and_reason_are_collapsed_into_one_with_their_count(empty_store):
    empty_store.upgrade("0002")
    stamp = "2026-11-20 03:00:00"
    repeated = [("hl7_message", "msh=A|B|1", "not HL7", f"2026-11-2{day} 03:00:00") for day in range(3)]
    rows = [*repeated, ("hl7_message", "msh=A|B|1", "no OBX", stamp), ("ecg", "fhir:o1@1", "flat", stamp)]
    with empty_store.engine.begin() as connection:
        for kind, raw_ref, reason, seen in rows:
            connection.execute(
                sa.text(
                    "INSERT INTO quarantine (kind, origin, reason, raw_ref, state, retry_count, created_at, updated_at)"
                    " VALUES (:kind, 'o', :reason, :raw_ref, 'open', 0, :seen, :seen)"
                ),
                {"kind": kind, "reason": reason, "raw_ref": raw_ref, "seen": seen},
            )
        connection.execute(
            sa.text(
                "INSERT INTO runs (started_at, status, model_versions, counts) VALUES (:at, 'running', '[]', '{}')"
            ),
            {"at": stamp},
        )
    empty_store.upgrade()
    by_reason = {entry.entry.reason: entry for entry in empty_store.list_quarantine()}
    assert {reason: entry.seen_count for reason, entry in by_reason.items()} == {"not HL7": 3, "no OBX": 1, "flat": 1}
    assert by_reason["not HL7"].last_seen_at.day == 22 and by_reason["not HL7"].created_at.day == 20
    assert empty_store.abandon_running_runs("test") == [1]


def _old_prediction_rows(connection, rows) -> None:
    for study_id, version, kind, code, probability, positive in rows:
        connection.execute(
            sa.text(
                "INSERT INTO predictions (study_id, model_version, target_kind, code, probability, is_positive,"
                " created_at) VALUES (:study, :version, :kind, :code, :p, :positive, '2026-11-20 03:00:00')"
            ),
            {"study": study_id, "version": version, "kind": kind, "code": code, "p": probability, "positive": positive},
        )


def _study_rows(connection, n: int) -> None:
    for index in range(1, n + 1):
        connection.execute(
            sa.text(
                "INSERT INTO ecg_studies (source, source_id, source_version, fs_hz, leads, status, created_at,"
                " updated_at) VALUES ('fhir', :id, '1', 500.0, '[]', 'scored', :at, :at)"
            ),
            {"id": f"o{index}", "at": "2026-11-20 03:00:00"},
        )


def test_per_output_prediction_rows_become_one_row_per_study_and_model_keeping_order_and_explanations(empty_store):
    empty_store.upgrade("0004")
    old = [
        (1, "m-1", "lab", "potassium_high", 0.7, True),  # written first: labs may precede diagnoses in the old rows
        (1, "m-1", "diagnosis", "I48", 0.9, True),
        (1, "m-1", "diagnosis", "I21", 1 / 3, False),
        (1, "m-2", "diagnosis", "I48", 0.4, False),  # a shadow's, without explanations
        (2, "m-1", "diagnosis", "I48", 0.1, False),
    ]
    with empty_store.engine.begin() as connection:
        _study_rows(connection, 2)
        _old_prediction_rows(connection, old)
        connection.execute(
            sa.text(
                "INSERT INTO explanations (study_id, model_version, diagnosis_code, lab_code, weight, created_at)"
                " VALUES (1, 'm-1', 'I48', 'potassium_high', 0.7, '2026-11-20 03:00:00')"
            )
        )
    empty_store.upgrade()
    assert {"predictions", "explanations"}.isdisjoint(sa.inspect(empty_store.engine).get_table_names())
    [first] = empty_store.get_prediction_sets(1, "m-1")
    assert (first.diagnoses.codes, first.diagnoses.probabilities, first.diagnoses.positive) == (
        ("I48", "I21"), (0.9, 1 / 3), (True, False)
    )  # fmt: skip
    assert (first.labs.codes, first.labs.positive) == (("potassium_high",), (True,))
    assert [(e.diagnosis_code, e.lab_code, e.weight) for e in empty_store.get_explanations(1, "m-1")] == [
        ("I48", "potassium_high", 0.7)
    ]
    assert [p.model_version for p in empty_store.get_predictions(1)] == ["m-1", "m-1", "m-1", "m-2"]
    assert [(p.code, p.probability) for p in empty_store.get_predictions(2)] == [("I48", 0.1)]
    assert empty_store.put_prediction_sets([first]) == 0  # the unique key still holds after the conversion


def test_the_conversion_goes_back_down_to_one_row_per_output(empty_store):
    empty_store.upgrade("0004")
    old = [(1, "m-1", "diagnosis", "I48", 0.9, True), (1, "m-1", "lab", "potassium_high", 0.2, False)]
    with empty_store.engine.begin() as connection:
        _study_rows(connection, 1)
        _old_prediction_rows(connection, old)
    empty_store.upgrade()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with empty_store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0004")
    with empty_store.engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT study_id, model_version, target_kind, code, probability, is_positive FROM predictions")
        ).all()
    assert [(*row[:5], bool(row[5])) for row in rows] == old
    empty_store.upgrade()  # and up again
    assert [(p.code, p.probability) for p in empty_store.get_predictions(1)] == [("I48", 0.9), ("potassium_high", 0.2)]

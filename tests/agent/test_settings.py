"""The agent's settings: one object from a TOML file, the environment and secret files, typos refused."""

import os
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.settings import DEFAULT_CRON, AgentSettings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "agent.example.toml"


@pytest.fixture(autouse=True)
def _no_agent_environment(monkeypatch):
    for name in [n for n in os.environ if n.startswith("ECG_AGENT_")]:
        monkeypatch.delenv(name)


def test_defaults_need_no_file_a_sqlite_database_and_a_nightly_schedule():
    settings = load_settings()
    assert settings.database_url.get_secret_value().startswith("sqlite:///")
    assert settings.schedule.cron == DEFAULT_CRON == "0 2 * * *"
    assert not settings.sources.fhir.enabled and not settings.sinks.hl7.enabled


def test_the_example_deploy_config_parses():
    settings = load_settings(EXAMPLE)
    assert settings.sources.fhir.server.auth.kind == "smart"
    assert settings.sources.hl7.tls.client_ca_file == Path("/etc/ecg-agent/interface-engine-ca.pem")
    assert settings.schedule.timezone == "Europe/Berlin"


def test_environment_overrides_the_file_with_nested_names(monkeypatch):
    monkeypatch.setenv("ECG_AGENT_SOURCES__FHIR__SERVER__BASE_URL", "https://other.example/fhir")
    monkeypatch.setenv("ECG_AGENT_SCORING__BATCH_SIZE", "8")
    settings = load_settings(EXAMPLE)
    assert settings.sources.fhir.server.base_url == "https://other.example/fhir"
    assert settings.scoring.batch_size == 8
    assert settings.sources.fhir.page_size == 50  # the rest still comes from the file


def test_a_secret_file_supplies_the_database_url_and_is_masked_when_printed(tmp_path):
    (tmp_path / "ECG_AGENT_DATABASE_URL").write_text("postgresql+psycopg://agent:s3cret@db/ecg")
    settings = load_settings(EXAMPLE, secrets_dir=tmp_path)
    assert settings.database_url.get_secret_value() == "postgresql+psycopg://agent:s3cret@db/ecg"
    assert "s3cret" not in str(settings.redacted())


def test_keyword_overrides_win_over_everything(monkeypatch):
    monkeypatch.setenv("ECG_AGENT_REGISTRY_DIR", "/from/env")
    assert load_settings(EXAMPLE, registry_dir=Path("/from/kwarg")).registry_dir == Path("/from/kwarg")


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("[scoring]\nbatchsize = 3\n", "scoring.batchsize"),
        ('[schedule]\ncron = "every night"\n', "crontab"),
        ('[schedule]\ntimezone = "Mars/Olympus"\n', "unknown time zone"),
        ("[sources.fhir]\nenabled = true\n", "no [sources.fhir.server]"),
        ('[sources.fhir.server]\nbase_url = "x"\n[sources.fhir.server.auth]\nkind = "smart"\n', "client_id"),
        ("[sources.wfdb]\nenabled = true\n", "no path"),
        ("database_url = \n", "not valid TOML"),
    ],
    ids=["typo", "bad-cron", "bad-timezone", "fhir-without-server", "smart-incomplete", "wfdb-without-path", "toml"],
)
def test_a_bad_config_is_refused_with_the_setting_and_the_reason(tmp_path, toml, named):
    config = tmp_path / "agent.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError, match=r"agent\.toml") as raised:
        load_settings(config)
    assert named in str(raised.value)


def test_a_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_settings(tmp_path / "nope.toml")


def test_settings_are_one_immutable_object():
    settings = AgentSettings()
    with pytest.raises(ValueError, match="frozen"):
        settings.registry_dir = Path("/elsewhere")

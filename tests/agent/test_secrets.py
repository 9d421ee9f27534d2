"""Secrets stay secret: in log lines (httpx's own included), in ``config check``, and out of the TOML file."""

import io
import logging
import os

import httpx
import pytest

from agent.cli import configure_logging, main
from agent.errors import ConfigError
from agent.redaction import SecretMaskingFilter, mask_secrets
from agent.settings import load_settings


@pytest.fixture(autouse=True)
def _no_agent_environment(monkeypatch):
    for name in [n for n in os.environ if n.startswith("ECG_AGENT_")]:
        monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgresql+psycopg://ecg:s3cr%40t@db.hospital.local:5432/ecg", "postgresql+psycopg://ecg:***@db.hospital.local:5432/ecg"),
        ("GET https://svc:pw@fhir.local/r4/Observation?_count=5", "GET https://svc:***@fhir.local/r4/Observation?_count=5"),
        ("POST /token?grant_type=x&client_secret=abc123", "POST /token?grant_type=x&client_secret=***"),
        ("GET /r4/Patient?access_token=eyJhbGciOi.x.y&_id=1", "GET /r4/Patient?access_token=***&_id=1"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),  # an @ the sender forgot to encode
    ],
)  # fmt: skip
def test_passwords_in_urls_and_credential_parameters_are_masked_the_user_stays(text, masked):
    assert mask_secrets(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "mllp://127.0.0.1:2575 closed",
        "http://fhir.local:8080/r4/Observation?code=x|y",
        "sqlite:////var/lib/ecg-agent/agent.db",
        "postgresql+psycopg://ecg_agent@db.hospital.local/ecg_agent",
        "time 12:30:45 at host:port/x@y",
    ],
)
def test_text_without_secrets_is_left_alone(text):
    assert mask_secrets(text) == text


@pytest.fixture
def captured_root_log():
    """A handler on the root logger at INFO, as the CLI's; what it wrote."""
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # basicConfig leaves the level alone where pytest already installed handlers
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_httpx_request_lines_are_logged_without_the_password_once_the_cli_set_up_logging(captured_root_log):
    configure_logging(verbose=False)
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={}))
    with httpx.Client(transport=transport) as client:
        client.get("https://svc-ecg:hunter2@fhir.hospital.local/r4/Observation?access_token=tok-42&_count=1")

    written = captured_root_log.getvalue()
    assert "INFO httpx: HTTP Request: GET https://svc-ecg:***@fhir.hospital.local/r4/Observation" in written
    assert "access_token=***&_count=1" in written
    assert "hunter2" not in written and "tok-42" not in written


def test_a_logged_traceback_is_masked_too(captured_root_log):
    configure_logging(verbose=False)
    try:
        raise RuntimeError("cannot connect to postgresql://ecg:hunter2@db/ecg")
    except RuntimeError:
        logging.getLogger("agent.test").exception("store unreachable")
    written = captured_root_log.getvalue()
    assert "postgresql://ecg:***@db/ecg" in written and "hunter2" not in written


def test_the_filter_is_installed_once_per_handler(captured_root_log):
    configure_logging(verbose=False)
    configure_logging(verbose=False)
    [handler] = [h for h in logging.getLogger().handlers if getattr(h, "stream", None) is captured_root_log]
    assert sum(isinstance(f, SecretMaskingFilter) for f in handler.filters) == 1


def test_config_check_masks_credentials_in_every_url(monkeypatch, capsys):
    monkeypatch.setenv("ECG_AGENT_DATABASE_URL", "postgresql+psycopg://ecg:hunter2@db/ecg")
    monkeypatch.setenv("ECG_AGENT_SOURCES__FHIR__SERVER__BASE_URL", "https://svc:hunter3@fhir.local/r4")
    assert main(["config", "check"]) == 0
    printed = capsys.readouterr().out
    assert "hunter2" not in printed and "hunter3" not in printed
    assert '"base_url": "https://svc:***@fhir.local/r4"' in printed


def test_a_password_written_into_the_toml_file_is_refused_naming_the_secret_file_and_variable(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text('database_url = "postgresql+psycopg://ecg:hunter2@db/ecg"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert "database_url holds a password or token" in message
    assert "secret file ECG_AGENT_DATABASE_URL in --secrets-dir" in message
    assert "hunter2" not in message


def test_a_nested_url_with_a_password_is_refused_naming_its_environment_variable(tmp_path, capsys):
    config = tmp_path / "agent.toml"
    config.write_text('[sources.fhir.server]\nbase_url = "https://svc:hunter3@fhir.local/r4"\n')
    assert main(["--config", str(config), "config", "check"]) == 1
    error = capsys.readouterr().err
    assert "sources.fhir.server.base_url holds a password" in error
    assert "environment variable ECG_AGENT_SOURCES__FHIR__SERVER__BASE_URL" in error
    assert "hunter3" not in error


def test_the_same_password_from_the_secrets_folder_is_accepted(tmp_path):
    (tmp_path / "ECG_AGENT_DATABASE_URL").write_text("postgresql+psycopg://ecg:hunter2@db/ecg")
    config = tmp_path / "agent.toml"
    config.write_text('database_url = "postgresql+psycopg://ecg@db/ecg"  # a user, no password: fine\n')
    settings = load_settings(config, secrets_dir=tmp_path)
    assert settings.database_url.get_secret_value() == "postgresql+psycopg://ecg:hunter2@db/ecg"

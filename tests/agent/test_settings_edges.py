"""Settings at the system's edges: the MLLP listener's exposure, the FHIR client's patience, secrets in the file."""

import os
from pathlib import Path

import pytest

from agent.cli import main
from agent.errors import ConfigError
from agent.service import fhir_client
from agent.settings import load_settings
from integrations.fhir import FhirConfig
from integrations.hl7 import MllpListenerConfig


@pytest.fixture(autouse=True)
def _no_agent_environment(monkeypatch):
    for name in [n for n in os.environ if n.startswith("ECG_AGENT_")]:
        monkeypatch.delenv(name)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


# --- the MLLP listener: no plaintext PHI off this machine unless said so ------------------------------------------


def test_a_plaintext_listener_on_a_network_address_is_refused_by_config_check(tmp_path, capsys):
    config = _toml(tmp_path, '[sources.hl7]\nenabled = true\nhost = "0.0.0.0"\n')
    assert main(["--config", str(config), "config", "check"]) == 1
    error = capsys.readouterr().err
    assert "sources.hl7.host '0.0.0.0' is not a loopback address" in error
    assert "allow_plaintext" in error


@pytest.mark.parametrize(
    "section",
    [
        '[sources.hl7]\nhost = "127.0.0.1"\n',
        '[sources.hl7]\nhost = "localhost"\n',
        '[sources.hl7]\nhost = "::1"\n',
        '[sources.hl7]\nhost = "0.0.0.0"\nallow_plaintext = true\n',
        '[sources.hl7]\nhost = "0.0.0.0"\n[sources.hl7.tls]\ncert_file = "c.pem"\nkey_file = "k.pem"\n',
    ],
    ids=["ipv4 loopback", "localhost", "ipv6 loopback", "explicitly allowed", "with TLS"],
)
def test_loopback_tls_or_an_explicit_allowance_pass(tmp_path, section):
    load_settings(_toml(tmp_path, section))


def test_the_listener_limits_have_defaults_and_are_settings(tmp_path):
    defaults = load_settings().sources.hl7
    assert (defaults.idle_timeout_s, defaults.max_connections, defaults.allow_plaintext) == (120.0, 32, False)
    tuned = load_settings(_toml(tmp_path, "[sources.hl7]\nidle_timeout_s = 30\nmax_connections = 4\n")).sources.hl7
    assert (tuned.idle_timeout_s, tuned.max_connections) == (30.0, 4)
    with pytest.raises(ConfigError, match=r"sources\.hl7\.max_connections"):
        load_settings(_toml(tmp_path, "[sources.hl7]\nmax_connections = 0\n"))


# --- the FHIR client: bounded patience with a slow server ----------------------------------------------------------


def test_the_fhir_server_settings_reach_the_clients_retry_and_flow_policies(tmp_path):
    config = _toml(
        tmp_path,
        '[sources.fhir.server]\nbase_url = "https://fhir.example.org/r4"\nmax_retries = 2\nretry_budget_s = 45\n'
        "max_concurrent_requests = 8\nbreaker_failures = 3\nbreaker_cooldown_s = 120\n",
    )
    with fhir_client(load_settings(config).sources.fhir.server) as client:
        retry, flow = client.config.retry, client.config.flow
    assert (retry.max_attempts, retry.budget_s) == (3, 45.0)
    assert (flow.max_concurrent_requests, flow.breaker_failures, flow.breaker_cooldown_s) == (8, 3, 120.0)


def test_the_fhir_defaults_give_up_on_a_request_within_a_minute_and_a_half():
    server = load_settings(sources={"fhir": {"server": {"base_url": "https://f/r4"}}}).sources.fhir.server
    assert (server.timeout_s, server.max_retries, server.retry_budget_s) == (30.0, 3, 90.0)
    assert (server.max_concurrent_requests, server.breaker_failures, server.breaker_cooldown_s) == (4, 5, 60.0)


def test_the_settings_defaults_are_the_libraries_defaults():
    """Repeated in the settings so that `config check` stays light; they must not drift apart."""
    server = load_settings(sources={"fhir": {"server": {"base_url": "https://f/r4"}}}).sources.fhir.server
    library = FhirConfig(base_url="https://f/r4")
    assert (server.timeout_s, server.max_retries + 1, server.retry_budget_s) == (
        library.timeout_s,
        library.retry.max_attempts,
        library.retry.budget_s,
    )
    flow = library.flow
    assert (server.max_concurrent_requests, server.breaker_failures, server.breaker_cooldown_s) == (
        flow.max_concurrent_requests,
        flow.breaker_failures,
        flow.breaker_cooldown_s,
    )
    inbox, listener = load_settings().sources.hl7, MllpListenerConfig()
    assert (inbox.idle_timeout_s, inbox.max_connections) == (listener.idle_timeout_s, listener.max_connections)

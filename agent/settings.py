"""The agent's one settings object, built at the entry point and passed down.

Precedence, highest first (written down because operators ask):

1. keyword arguments (tests, ``--since`` style CLI overrides);
2. environment variables, prefix ``ECG_AGENT_``, nested with ``__``
   (``ECG_AGENT_SOURCES__FHIR__BASE_URL``);
3. secret files in the secrets folder (``--secrets-dir``, e.g. systemd's
   ``$CREDENTIALS_DIRECTORY`` or a Kubernetes Secret volume), one file per top-level
   field, named like its environment variable (``ECG_AGENT_DATABASE_URL``);
4. the TOML file (``--config``; example: ``deploy/agent.example.toml``);
5. the defaults below.

Secrets nested deeper (a FHIR bearer token, a SMART private key, TLS keys) are never
written into the TOML file: the file names the *path* of a secret file instead
(``bearer_token_file``), read only when the connection is made.
"""

from __future__ import annotations

import tomllib
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from agent.crontab import crontab_trigger  # the scheduler's own parser: what validates is what runs
from agent.errors import ConfigError
from agent.redaction import holds_secret, mask_secrets_in
from integrations.addresses import is_loopback_host

ENV_PREFIX = "ECG_AGENT_"
DEFAULT_DATABASE_URL = "sqlite:///ecg-agent.db"
DEFAULT_REGISTRY_DIR = Path("models")
DEFAULT_ECG_CODE = "http://loinc.org|11524-6"
DEFAULT_CRON = "0 2 * * *"  # 02:00 every night
DEFAULT_MLLP_PORT = 2575
DEFAULT_MAX_HL7_MESSAGE_BYTES = 16 * 1024 * 1024  # a 12-lead, 10 s, 1 kHz ORU is about 1 MB
# The libraries' defaults, repeated so that `config check` does not load the FHIR and HL7 stacks
# (tests/agent/test_settings_edges.py holds them equal); why these values: integrations.fhir.config.
DEFAULT_MLLP_IDLE_TIMEOUT_S = 120.0
DEFAULT_MLLP_MAX_CONNECTIONS = 32
DEFAULT_FHIR_TIMEOUT_S = 30.0
DEFAULT_FHIR_MAX_RETRIES = 3
DEFAULT_FHIR_RETRY_BUDGET_S = 90.0
DEFAULT_FHIR_MAX_CONCURRENT_REQUESTS = 4
DEFAULT_FHIR_BREAKER_FAILURES = 5
DEFAULT_FHIR_BREAKER_COOLDOWN_S = 60.0


def _known_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r} (an IANA name such as 'America/New_York')") from exc
    return value


def _check_system_uri(system: str, what: str) -> None:
    """An identifier system goes into a token search (``system|value``): a URI without spaces or ``|``."""
    if not system or any(char.isspace() for char in system) or "|" in system or ":" not in system:
        raise ValueError(f"{what} {system!r} is not a URI (e.g. 'urn:oid:1.2.3' or 'https://hospital.example/mrn')")


class _Section(BaseModel):
    """A settings section: typos in the TOML file are refused, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FhirAuthSettings(_Section):
    """How the agent authenticates to the FHIR server."""

    kind: Literal["none", "bearer", "smart"] = "none"
    bearer_token_file: Path | None = None
    #: SMART Backend Services: client_credentials with a JWT assertion signed by this key.
    client_id: str | None = None
    token_url: str | None = None
    private_key_file: Path | None = None
    key_id: str | None = None
    algorithm: Literal["RS384", "ES384"] = "RS384"
    #: Patient.rs: results of HL7-sourced ECGs find their Patient by identifier (sinks.fhir.hl7_patient_lookup).
    scope: str = "system/Observation.rs system/Observation.c system/Device.c system/Patient.rs"

    @model_validator(mode="after")
    def _complete_for_its_kind(self) -> FhirAuthSettings:
        if self.kind == "bearer" and self.bearer_token_file is None:
            raise ValueError("auth kind 'bearer' needs bearer_token_file")
        if self.kind == "smart":
            missing = [name for name in ("client_id", "token_url", "private_key_file") if getattr(self, name) is None]
            if missing:
                raise ValueError(f"auth kind 'smart' needs {', '.join(missing)}")
        return self


class FhirServerSettings(_Section):
    """One FHIR R4 server: where it is and how to reach it."""

    base_url: str
    #: The longest silence within an answer (not its total time), in seconds.
    timeout_s: float = Field(default=DEFAULT_FHIR_TIMEOUT_S, gt=0)
    verify_tls: bool = True
    ca_bundle_file: Path | None = None
    max_retries: int = Field(default=DEFAULT_FHIR_MAX_RETRIES, ge=0)
    #: One request's whole life, its attempts and the waits between them, in seconds.
    retry_budget_s: float = Field(default=DEFAULT_FHIR_RETRY_BUDGET_S, gt=0)
    #: The most requests at this server at once (timed-out ones still count while the server works on them);
    #: it adapts downwards when the server times out, and caps sinks.fhir.max_in_flight.
    max_concurrent_requests: int = Field(default=DEFAULT_FHIR_MAX_CONCURRENT_REQUESTS, ge=1, le=64)
    #: Failed attempts in a row after which calls fail fast (the run fails; results stay in the outbox) ...
    breaker_failures: int = Field(default=DEFAULT_FHIR_BREAKER_FAILURES, ge=1)
    #: ... for this long, before one probe request tests the server again.
    breaker_cooldown_s: float = Field(default=DEFAULT_FHIR_BREAKER_COOLDOWN_S, ge=0)
    auth: FhirAuthSettings = FhirAuthSettings()


class FhirSourceSettings(_Section):
    """Pull new ECG Observations from FHIR, incrementally by ``_lastUpdated``."""

    enabled: bool = False
    server: FhirServerSettings | None = None
    ecg_code: str = DEFAULT_ECG_CODE
    page_size: int = Field(default=50, ge=1, le=1000)
    #: Re-query this far behind the watermark: servers commit out of order.
    overlap_s: float = Field(default=300.0, ge=0)

    @model_validator(mode="after")
    def _server_when_enabled(self) -> FhirSourceSettings:
        if self.enabled and self.server is None:
            raise ValueError("sources.fhir is enabled but has no [sources.fhir.server]")
        return self


class TlsServerSettings(_Section):
    cert_file: Path
    key_file: Path
    #: When set, clients must present a certificate signed by this CA (mutual TLS).
    client_ca_file: Path | None = None


class Hl7InboxSettings(_Section):
    """The MLLP listener: ORU^R01 ECG messages are stored in the inbox, then scored by the nightly run."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_MLLP_PORT, ge=0, le=65535)
    max_message_bytes: int = Field(default=DEFAULT_MAX_HL7_MESSAGE_BYTES, gt=0)
    tls: TlsServerSettings | None = None
    #: A connection silent this long, between messages or inside one, is closed (a partial message is quarantined).
    idle_timeout_s: float = Field(default=DEFAULT_MLLP_IDLE_TIMEOUT_S, gt=0)
    #: More simultaneous connections than this are closed at once; interface engines retry.
    max_connections: int = Field(default=DEFAULT_MLLP_MAX_CONNECTIONS, ge=1, le=1024)
    #: Listen without TLS on a non-loopback host (a TLS-terminating proxy, an isolated network): logged as a warning.
    allow_plaintext: bool = False

    @model_validator(mode="after")
    def _tls_off_loopback(self) -> Hl7InboxSettings:
        # Checked even when disabled: `ecg-agent listen` runs the listener regardless of `enabled`.
        if self.tls is None and not self.allow_plaintext and not is_loopback_host(self.host):
            raise ValueError(
                f"sources.hl7.host {self.host!r} is not a loopback address and [sources.hl7.tls] is not set: "
                "HL7 messages carry PHI; configure TLS, or set sources.hl7.allow_plaintext = true if the network "
                "path is protected otherwise"
            )
        return self


class WfdbFolderSettings(_Section):
    """A folder that ECG carts or an export job drop WFDB records into."""

    enabled: bool = False
    path: Path | None = None
    #: A record younger than this may still be being written: it is retried next run.
    settle_s: float = Field(default=30.0, ge=0)

    @model_validator(mode="after")
    def _path_when_enabled(self) -> WfdbFolderSettings:
        if self.enabled and self.path is None:
            raise ValueError("sources.wfdb is enabled but has no path")
        return self


class SourcesSettings(_Section):
    fhir: FhirSourceSettings = FhirSourceSettings()
    hl7: Hl7InboxSettings = Hl7InboxSettings()
    wfdb: WfdbFolderSettings = WfdbFolderSettings()


class FhirWritebackSettings(_Section):
    """Write results back as FHIR Observations (to the source server unless another is given)."""

    enabled: bool = False
    server: FhirServerSettings | None = None
    status: Literal["preliminary", "final"] = "preliminary"
    #: Studies written back at once, each its own transactions; bounded by what the receiving server absorbs.
    max_in_flight: int = Field(default=4, ge=1, le=64)
    #: Also write results of HL7-sourced ECGs, to the one Patient holding the message's PID-3 identifier
    #: (``Patient?identifier=``); the ECG itself is named by its message (MSH-3|MSH-4|MSH-10).
    hl7_patient_lookup: bool = True
    #: PID-3's assigning authority (its namespace id, or its universal id) → the FHIR ``Identifier.system`` of
    #: that register. An authority sent with an ISO OID needs no entry (``urn:oid:<oid>``), nor one sent as a URI.
    patient_identifier_systems: dict[str, str] = {}
    #: The system of a PID-3 sent without an assigning authority; unset, such ids are not looked up (an
    #: unmapped authority is never guessed: the same number in another register is another patient).
    patient_identifier_system_without_authority: str | None = None

    @field_validator("patient_identifier_systems")
    @classmethod
    def _systems_are_uris(cls, systems: dict[str, str]) -> dict[str, str]:
        for authority, system in systems.items():
            _check_system_uri(system, f"the system of authority {authority!r}")
        return systems

    @field_validator("patient_identifier_system_without_authority")
    @classmethod
    def _system_is_a_uri(cls, system: str | None) -> str | None:
        if system is not None:
            _check_system_uri(system, "the system")
        return system


class Hl7OutboundSettings(_Section):
    """Send results as ORU^R01 over MLLP, for EHRs without FHIR."""

    enabled: bool = False
    host: str | None = None
    port: int = Field(default=DEFAULT_MLLP_PORT, ge=1, le=65535)
    ack_timeout_s: float = Field(default=30.0, gt=0)
    tls_ca_file: Path | None = None

    @model_validator(mode="after")
    def _host_when_enabled(self) -> Hl7OutboundSettings:
        if self.enabled and not self.host:
            raise ValueError("sinks.hl7 is enabled but has no host")
        return self


class SinksSettings(_Section):
    fhir: FhirWritebackSettings = FhirWritebackSettings()
    hl7: Hl7OutboundSettings = Hl7OutboundSettings()


class ScheduleSettings(_Section):
    """When ``serve`` runs the batch: a crontab line in a time zone."""

    cron: str = DEFAULT_CRON
    timezone: str = "UTC"
    #: A night missed by less than this (machine down, long previous run) still runs, once.
    misfire_grace_time_s: int = Field(default=6 * 3600, gt=0)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return _known_zone(value)

    @model_validator(mode="after")
    def _valid_cron(self) -> ScheduleSettings:
        try:
            crontab_trigger(self.cron, self.timezone)
        except ValueError as exc:
            raise ValueError(f"schedule.cron {self.cron!r} is not a crontab line: {exc}") from exc
        return self


class ScoringSettings(_Section):
    batch_size: int = Field(default=64, ge=1)
    #: run-once exits non-zero when more than this fraction of ECGs failed or were quarantined.
    max_failure_rate: float = Field(default=0.05, ge=0, le=1)
    #: Lab abnormalities named as the explanation of each positive diagnosis.
    explanation_top_k: int = Field(default=3, ge=0)
    #: A run stops collecting after this long, finishes what it has committed and exits non-zero; the rest
    #: waits for the next run. Below the SQLite run lock's 6 h lease, so a slow run is never taken over.
    deadline_s: float | None = Field(default=4 * 3600.0, gt=0)


class BackfillSettings(_Section):
    """``ecg-agent backfill``: scoring an archive on a Dask cluster (the command line overrides each)."""

    #: Files (WFDB records, HL7 dump files, NDJSON ranges) per partition: one task, one progress row.
    files_per_partition: int = Field(default=32, ge=1)
    #: An NDJSON file is cut into line-aligned ranges of about this size (8 MiB: ~30 ECG Observations).
    ndjson_range_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    #: Worker processes of the local cluster (one thread each) when no scheduler is given.
    workers: int = Field(default=2, ge=1)
    #: An existing Dask scheduler (``tcp://HOST:PORT``); PostgreSQL only, as workers on other machines write.
    scheduler: str | None = None


class SiteSettings(_Section):
    """Facts about the hospital that inputs leave out."""

    #: IANA zone of the site's clocks: HL7 v2 times without an offset (the norm) and FHIR dates are placed in it.
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return _known_zone(value)

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


class AgentSettings(BaseSettings):
    """Everything the agent needs to know about its hospital, in one validated object."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True, case_sensitive=False
    )

    database_url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)
    registry_dir: Path = DEFAULT_REGISTRY_DIR
    site: SiteSettings = SiteSettings()
    sources: SourcesSettings = SourcesSettings()
    sinks: SinksSettings = SinksSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    scoring: ScoringSettings = ScoringSettings()
    backfill: BackfillSettings = BackfillSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # No dotenv: a stray .env in the working directory must not reconfigure a hospital service.
        return init_settings, env_settings, file_secret_settings, TomlConfigSettingsSource(settings_cls)

    def redacted(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets masked: safe to print or log.

        ``SecretStr`` fields print as stars; any other URL keeps its user but not its password.
        """
        return mask_secrets_in(self.model_dump(mode="json"))


def load_settings(
    config_file: Path | None = None, *, secrets_dir: Path | None = None, **overrides: Any
) -> AgentSettings:
    """Build the settings from a TOML file, the environment and secret files (see the module docstring).

    Raises :class:`ConfigError` naming the file, or the setting and the reason.
    """
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"agent config file {config_file} does not exist")
    if secrets_dir is not None and not secrets_dir.is_dir():
        raise ConfigError(f"secrets folder {secrets_dir} does not exist")
    if config_file is not None:
        _refuse_secrets_in_file(config_file)

    class _Configured(AgentSettings):
        model_config = SettingsConfigDict(toml_file=config_file, secrets_dir=secrets_dir)

    try:
        return _Configured(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"invalid agent settings ({config_file or 'no config file'}): {_describe(exc)}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"agent config file {config_file} is not valid TOML: {exc}") from exc


def _refuse_secrets_in_file(config_file: Path) -> None:
    """Refuse a password (or token) written into the TOML file; name where it belongs instead.

    Refused, not warned about: the file is configuration, readable by design (a Kubernetes ConfigMap,
    /etc/ecg-agent/agent.toml under configuration management, a copy pasted into a ticket), and a
    warning scrolls out of the journal while the password stays in the file. Moving it costs one
    step, and ``config check`` says which.
    """
    try:
        data = tomllib.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return  # the settings source reports an unreadable file below, with its own message
    for path, value in _strings(data):
        if holds_secret(value):
            raise ConfigError(f"agent config file {config_file}: {'.'.join(path)} holds a password or token; "
                              f"{_where_secrets_go(path)}")  # fmt: skip


def _strings(data: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    if isinstance(data, str):
        yield path, data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from _strings(value, (*path, str(key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _strings(value, (*path, str(index)))


def _where_secrets_go(path: tuple[str, ...]) -> str:
    variable = ENV_PREFIX + "__".join(path).upper()
    if len(path) == 1:  # secret files hold top-level settings only
        return f"put the value in the secret file {variable} in --secrets-dir, or the environment variable {variable}"
    return f"put the value in the environment variable {variable}, or use the section's *_file settings"


def _describe(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(part) for part in e['loc']) or 'settings'}: {e['msg']}" for e in error.errors())

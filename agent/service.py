"""The agent assembled from its settings: store, run lock, model loader, sources and sinks.

``compose`` is the one place that reads the settings and builds the integrations, so
the batch (:mod:`agent.batch`) reads like its diagram and knows nothing of TOML.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import httpx

from agent.batch import RunReport, run_once
from agent.errors import ConfigError
from agent.loader import ModelLoader
from agent.routing import unrouted
from agent.settings import AgentSettings, FhirServerSettings, TlsServerSettings
from agent.sinks import ResultSink
from agent.sinks.fhir import FhirResultSink
from agent.sinks.hl7 import Hl7ResultSink
from agent.sinks.manifests import ManifestIndex
from agent.sinks.patients import PatientIdentifierSystems
from agent.sources import EcgSource
from agent.sources.fhir import FhirEcgSource
from agent.sources.hl7_inbox import Hl7InboxSource
from agent.sources.wfdb_folder import WfdbFolderSource
from integrations.fhir.auth import BearerTokenAuth, SmartBackendAuth
from integrations.fhir.client import FhirClient
from integrations.fhir.config import FhirConfig, FlowPolicy, RetryPolicy, SmartBackendConfig
from integrations.fhir.pull import EcgPullConfig
from integrations.fhir.writeback import WriteBackConfig
from integrations.hl7.client import MllpClient
from integrations.store import RunStatus, Store, same_host_pid_alive

log = logging.getLogger(__name__)

RUN_LOCK = "ecg-agent-run"
#: A SQLite lock row older than this belongs to a process that died without releasing it.
RUN_LOCK_LEASE_S = 6 * 3600

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_TOO_MANY_FAILURES = 3
EXIT_LOCKED = 4
#: The run finished but an operator must look: a refused model, the deadline, write-backs that failed.
EXIT_NEEDS_ATTENTION = 5


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What ``run-once`` reports and exits with."""

    exit_code: int
    message: str
    report: RunReport | None = None

    def summary(self) -> str:
        return self.message


class AgentService:
    """One agent process: a store, a model loader kept across runs, and the settings."""

    def __init__(self, settings: AgentSettings, *, loader: ModelLoader | None = None) -> None:
        self.settings = settings
        self.store = Store.from_url(settings.database_url.get_secret_value())
        self.store.upgrade()
        self.loader = loader or ModelLoader(self.store)

    def run_once(self, *, since: datetime | None = None, progress: bool = True) -> RunOutcome:
        """One batch run under the database lock; a second process meanwhile exits cleanly with a message."""
        for route in unrouted(self.settings):
            log.warning("%s", route.describe())
        holder = f"{socket.gethostname()}:{os.getpid()}"
        lock = self.store.run_lock(RUN_LOCK, holder=holder, lease_s=RUN_LOCK_LEASE_S, holder_alive=same_host_pid_alive)
        with lock as held:
            if not held.acquired:
                return RunOutcome(EXIT_LOCKED, f"another run is in progress ({held.held_by}); nothing done")
            # Holding the run lock, a run still "running" and any outbox lease belong to a run that died.
            abandoned = self.store.abandon_running_runs(f"the process died; its lock was taken over by {holder}")
            if abandoned:
                log.warning("runs %s were left running by a process that died: marked abandoned", abandoned)
            self.store.release_outbox_leases()
            models = self.loader.load_for_run()
            with ExitStack() as stack:
                sources = build_sources(self.settings, self.store, stack, since=since)
                sinks = build_sinks(self.settings, self.store, stack)
                report = run_once(self.store, models, sources, sinks, self.settings.scoring, progress=progress)
        return _outcome(report, self.settings.scoring.max_failure_rate, self.store)


def _outcome(report: RunReport, max_failure_rate: float, store: Store) -> RunOutcome:
    run = store.get_run(report.run_id)
    counts = ", ".join(f"{name} {count}" for name, count in sorted(report.counts.items())) or "nothing new"
    message = f"run {run.id} {run.status.value} with model {report.model_version or '-'}: {counts}"
    if run.status == RunStatus.FAILED:
        return RunOutcome(EXIT_RUN_FAILED, f"{message}; {run.error}", report)
    if report.failure_rate > max_failure_rate:
        return RunOutcome(
            EXIT_TOO_MANY_FAILURES,
            f"{message}; failure rate of new ECGs {report.failure_rate:.1%} is above the allowed "
            f"{max_failure_rate:.1%}",
            report,
        )
    if run.status == RunStatus.DEGRADED:
        return RunOutcome(EXIT_NEEDS_ATTENTION, f"{message}; needs attention: {'; '.join(run.problems)}", report)
    return RunOutcome(EXIT_OK, message, report)


def build_sources(
    settings: AgentSettings, store: Store, stack: ExitStack, *, since: datetime | None = None
) -> list[EcgSource]:
    sources: list[EcgSource] = []
    site_tz = settings.site.zone
    fhir = settings.sources.fhir
    if fhir.enabled:
        assert fhir.server is not None  # the settings refuse an enabled source without a server
        client = stack.enter_context(fhir_client(fhir.server))
        config = EcgPullConfig(
            ecg_code=fhir.ecg_code,
            page_size=fhir.page_size,
            overlap=timedelta(seconds=fhir.overlap_s),
            site_tz=site_tz,
        )
        sources.append(FhirEcgSource(client, store, config, since=since))
    if settings.sources.hl7.enabled:
        sources.append(Hl7InboxSource(store, site_tz=site_tz))
    wfdb = settings.sources.wfdb
    if wfdb.enabled:
        assert wfdb.path is not None
        sources.append(WfdbFolderSource(wfdb.path, store, settle_s=wfdb.settle_s, site_tz=site_tz))
    return sources


def build_sinks(settings: AgentSettings, store: Store, stack: ExitStack) -> list[ResultSink]:
    sinks: list[ResultSink] = []
    manifests = ManifestIndex(store)
    fhir = settings.sinks.fhir
    if fhir.enabled:
        server = fhir.server or settings.sources.fhir.server
        if server is None:
            raise ConfigError("sinks.fhir is enabled but neither it nor sources.fhir has a server")
        client = stack.enter_context(fhir_client(server))
        config = WriteBackConfig(observation_status=fhir.status)
        patient_systems = (
            PatientIdentifierSystems(fhir.patient_identifier_systems, fhir.patient_identifier_system_without_authority)
            if fhir.hl7_patient_lookup
            else None
        )
        sinks.append(
            FhirResultSink(
                client,
                manifests,
                store,
                config=config,
                max_in_flight=fhir.max_in_flight,
                patient_systems=patient_systems,
            )
        )
    hl7 = settings.sinks.hl7
    if hl7.enabled:
        assert hl7.host is not None
        context = ssl.create_default_context(cafile=str(hl7.tls_ca_file)) if hl7.tls_ca_file else None
        factory = partial(MllpClient, hl7.host, hl7.port, ssl_context=context, ack_timeout_s=hl7.ack_timeout_s)
        sinks.append(Hl7ResultSink(factory, manifests, store))
    return sinks


@contextmanager
def fhir_client(server: FhirServerSettings) -> Iterator[FhirClient]:
    config = FhirConfig(
        base_url=server.base_url,
        timeout_s=server.timeout_s,
        verify_tls=server.verify_tls,
        ca_bundle_path=server.ca_bundle_file,
        retry=RetryPolicy(max_attempts=server.max_retries + 1, budget_s=server.retry_budget_s),
        flow=FlowPolicy(
            max_concurrent_requests=server.max_concurrent_requests,
            breaker_failures=server.breaker_failures,
            breaker_cooldown_s=server.breaker_cooldown_s,
        ),
    )
    with FhirClient(config, auth=_fhir_auth(server)) as client:
        yield client


def _fhir_auth(server: FhirServerSettings) -> httpx.Auth | None:
    auth = server.auth
    if auth.kind == "none":
        return None
    if auth.kind == "bearer":
        assert auth.bearer_token_file is not None
        return BearerTokenAuth(_read_secret(auth.bearer_token_file, "FHIR bearer token"))
    assert auth.client_id and auth.token_url and auth.private_key_file
    config = SmartBackendConfig(
        token_url=auth.token_url,
        client_id=auth.client_id,
        private_key_path=auth.private_key_file,
        key_id=auth.key_id or auth.client_id,
        algorithm=auth.algorithm,
        scopes=tuple(auth.scope.split()),
    )
    return SmartBackendAuth(config)


def _read_secret(path: Path, what: str) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} from {path}: {exc.strerror or exc}") from exc


def listener_ssl_context(tls: TlsServerSettings | None) -> ssl.SSLContext | None:
    """The MLLP listener's TLS context; mutual TLS when a client CA is configured."""
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls.client_ca_file is not None:
        context.load_verify_locations(cafile=str(tls.client_ca_file))
        context.verify_mode = ssl.CERT_REQUIRED
    return context

"""``ecg-agent``: the hospital-side program.

Thin on purpose: each command parses its arguments, builds the one settings object
and calls one function. Mutating admin commands print what they changed and leave an
audit row. Exit codes: 0 success, 1 an operational error (the message names the
file, version or setting and the reason), 2 bad command-line usage.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from agent.errors import AgentError
from agent.redaction import install_secret_masking, mask_secrets
from agent.settings import AgentSettings, load_settings
from integrations.errors import IntegrationError
from integrations.store import BackfillProgress, BackfillStatus, ModelAuditEntry, ModelVersion, OutboxStatus, Store

if TYPE_CHECKING:  # imported lazily below: loading torch is slow, and `config check` should not need it
    from agent.registry import ModelRegistry, VerifyResult

DISTRIBUTION = "ecg-clinical-knowledge"
log = logging.getLogger("ecg-agent")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecg-agent",
        description="Nightly ECG scoring agent: pulls ECGs (FHIR, HL7 v2, WFDB), scores them with the exported "
        "model and writes results to SQL and FHIR. Settings come from --config (TOML), ECG_AGENT_* environment "
        "variables and --secrets-dir; see deploy/agent.example.toml.",
    )
    parser.add_argument("--config", type=Path, default=None, help="agent settings file (TOML)")
    parser.add_argument("--secrets-dir", type=Path, default=None, help="folder of secret files (one per setting)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("version", help="print the installed version")
    config = commands.add_parser("config", help="inspect the settings").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    config.add_parser(
        "check",
        help="validate the settings and print them, secrets masked (JSON on stdout); where results go on stderr",
    )
    db = commands.add_parser("db", help="database schema").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    db.add_parser("upgrade", help="apply the Alembic migrations (safe to run again)")
    _add_model_commands(commands)
    run_once = commands.add_parser(
        "run-once", help="one batch run now: pull, score, store, write back",
        description="Pull new ECGs from every enabled source, score them with the active model (and any shadow), "
        "store predictions and explanations, write results back, advance watermarks. Safe to rerun. Exit codes: "
        "0 done, 1 the run failed (a database, source or receiver could not be reached), 3 more new ECGs failed "
        "than scoring.max_failure_rate allows, 4 another run holds the lock, 5 the run finished but needs "
        "attention (a refused model, the deadline passed, write-backs failed; see status).",
    )  # fmt: skip
    run_once.add_argument(
        "--since", type=datetime.fromisoformat, default=None,
        help="re-pull FHIR ECGs updated after this ISO time instead of the stored watermark",
    )  # fmt: skip
    run_once.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    commands.add_parser(
        "serve", help="run the batch on the configured schedule (and the MLLP listener if enabled)",
        description="Run the nightly batch on schedule.cron in schedule.timezone (default 02:00 UTC) with "
        "APScheduler, keeping the job in the agent's database; also runs the MLLP listener when sources.hl7 is "
        "enabled. Stops on SIGTERM/SIGINT.",
    )  # fmt: skip
    commands.add_parser(
        "listen", help="run only the MLLP listener (HL7 v2 ORU^R01 into the inbox)",
        description="Accept HL7 v2 ORU^R01 ECG messages over MLLP (TLS optional), store each durably in the inbox, "
        "then ACK. Scoring happens in the next batch run.",
    )  # fmt: skip
    _add_backfill_command(commands)
    commands.add_parser("status", help="last runs, active and shadow models, backlog, quarantine, backfills")
    quarantine = commands.add_parser("quarantine", help="what could not be used, and why")
    quarantine_actions = quarantine.add_subparsers(dest="action", required=True, metavar="ACTION")
    quarantine_list = quarantine_actions.add_parser("list", help="open entries, oldest first")
    quarantine_list.add_argument("--kind", default=None, help="only this kind (ecg, hl7_message, fhir_observation...)")
    quarantine_list.add_argument("--limit", type=int, default=100)
    retry = quarantine_actions.add_parser("retry", help="requeue an entry for the next run (or say what to do)")
    retry.add_argument("quarantine_id", type=int, metavar="ID")
    _add_outbox_commands(commands)
    report = commands.add_parser(
        "report", help="one study as a 12-lead printout (PNG or PDF) with its findings and their lab explanations",
        description="Read the study's ECG again from its source and draw the standard 12-lead printout (25 mm/s, "
        "10 mm/mV, 1 mV calibration pulse) on one landscape page, with the positive findings by name and "
        "probability, charted ones apart from those only stored, and the predicted lab abnormalities that explain "
        "them.",
    )  # fmt: skip
    report.add_argument("study_id", type=int, metavar="STUDY", help="the study's id in the store (see `status`)")
    output = report.add_mutually_exclusive_group(required=True)
    output.add_argument("--png", type=_file_ending(".png"), metavar="FILE", help="write a PNG (150 dpi)")
    output.add_argument("--pdf", type=_file_ending(".pdf"), metavar="FILE", help="write a one-page PDF, true scale")
    report.add_argument("--paper", choices=("a4", "letter"), default="a4", help="landscape page size (default: a4)")
    report.add_argument("--model", default=None, help="model version whose results to show (default: active)")
    return parser


def _add_backfill_command(commands: argparse._SubParsersAction) -> None:
    backfill = commands.add_parser(
        "backfill", help="score an archive (WFDB tree, FHIR Bulk Data NDJSON, HL7 v2 dump) on a Dask cluster",
        description="List the archive's files in partitions, score them on Dask workers with the active model "
        "(verified by sha256 on every worker) and commit the results to the same store and outbox as run-once, "
        "idempotently: ECGs already scored are counted, not scored again. Resumable: a partition is recorded done "
        "after its commit; the same command again retries the failed and unfinished ones. Default: a local "
        "cluster on 127.0.0.1 (backfill.workers processes); --scheduler uses an existing cluster (PostgreSQL "
        "only; each worker reads the same --config and --secrets-dir on its machine). Results are queued; the "
        "next run-once delivers them. Exit codes: 0 every partition done, 1 some failed (run it again).",
    )  # fmt: skip
    backfill.add_argument("--wfdb", type=Path, default=None, metavar="DIR", help="a WFDB tree (read recursively)")
    backfill.add_argument("--fhir-ndjson", type=Path, default=None, metavar="DIR",
                          help="FHIR Bulk Data $export output: a folder of NDJSON files")  # fmt: skip
    backfill.add_argument("--hl7", type=Path, default=None, metavar="DIR",
                          help="HL7 v2 dump: one ORU^R01 per file, or MLLP-framed batch files")  # fmt: skip
    backfill.add_argument("--name", default="archive", help="the backfill's name: the same name resumes it")
    backfill.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                          help="an existing Dask scheduler (backfill.scheduler; default: a local cluster)")  # fmt: skip
    backfill.add_argument("--workers", type=int, default=None, help="local cluster processes (backfill.workers)")
    backfill.add_argument("--files-per-partition", type=int, default=None,
                          help="files (or NDJSON ranges) per partition (backfill.files_per_partition)")  # fmt: skip
    backfill.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_outbox_commands(commands: argparse._SubParsersAction) -> None:
    outbox = commands.add_parser(
        "outbox", help="write-backs waiting or parked",
        description="Every study's results wait in the outbox until each sink has taken them. A write-back the "
        "receiver refused on every attempt is parked (status failed) and stays there until an operator requeues "
        "it; the next run-once delivers what was requeued.",
    )  # fmt: skip
    actions = outbox.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="parked write-backs (or --pending), oldest first, with the last error")
    listing.add_argument("--pending", action="store_true", help="list the pending ones instead of the parked ones")
    listing.add_argument("--limit", type=int, default=100)
    requeue = actions.add_parser("requeue", help="put parked write-backs back in the queue, attempts reset")
    which = requeue.add_mutually_exclusive_group(required=True)
    which.add_argument("outbox_ids", type=int, nargs="*", default=None, metavar="ID", help="outbox ids (see list)")
    which.add_argument("--all", action="store_true", help="every parked write-back")


def _file_ending(suffix: str) -> Callable[[str], Path]:
    def parse(value: str) -> Path:
        path = Path(value)
        if path.suffix.lower() != suffix:
            raise argparse.ArgumentTypeError(f"{value!r} does not end in {suffix}")
        return path

    return parse


def _add_model_commands(commands: argparse._SubParsersAction) -> None:
    model = commands.add_parser(
        "model", help="register and roll out model versions",
        description="Model versions: register an exported artifact, run it in shadow, promote it, roll back. "
        "Every change is audited (actor, time, from → to, reason); see `model history`.",
    )  # fmt: skip
    model.add_argument("--actor", default=None, help="who the audit trail names (default: the OS user)")
    actions = model.add_subparsers(dest="action", required=True, metavar="ACTION")
    register = actions.add_parser("register", help="verify an artifact and copy it into the registry")
    register.add_argument("path", type=Path, help="artifact folder holding model.ts and manifest.json")
    actions.add_parser("list", help="every registered version and its state")
    show = actions.add_parser(
        "show", help="one version: state, sha256 and its release table (what it charts, what it only stores)",
        description="Print the version's state and its release table: per label the validation AUROC with its "
        "95 % CI, the operating threshold, sensitivity, specificity and PPV at the validation prevalence, and "
        "whether positive calls are charted (written back) or stored only.",
    )  # fmt: skip
    show.add_argument("version")
    show.add_argument("--json", action="store_true", help="the manifest summary as JSON instead")
    for name, text in (
        ("shadow", "score VERSION beside the active model; results stored, never written back"),
        ("promote", "make VERSION the one active model (atomic; the previous one is retired)"),
        ("retire", "take VERSION out of service"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("version")
        action.add_argument("--reason", required=True, help="why (kept in the audit trail)")
    rollback = actions.add_parser("rollback", help="promote the version that was active before the current one")
    rollback.add_argument("--reason", required=True, help="why (kept in the audit trail)")
    actions.add_parser("verify", help="re-hash every registered artifact; exit 1 if any fails")
    shadow_report = actions.add_parser(
        "shadow-report", help="compare a shadow version with the active one on the studies both scored",
        description="The two versions' release tables side by side (what each charts), then per label, over the "
        "studies scored by both the active and the shadow version: positive rates, agreement of positive calls "
        "and mean |Δ probability|; ends with whether a promote looks safe (exit 0) or needs review (exit 1: "
        "predictions differ, or the shadow would chart a label the active version does not).",
    )  # fmt: skip
    shadow_report.add_argument("version", nargs="?", default=None, help="shadow version (default: the only one)")
    history = actions.add_parser("history", help="the audit trail, oldest first")
    history.add_argument("version", nargs="?", default=None)


def _open_store(settings: AgentSettings) -> Store:
    store = Store.from_url(settings.database_url.get_secret_value())
    store.upgrade()
    return store


def _registry(settings: AgentSettings, actor: str) -> ModelRegistry:
    from agent.registry import ModelRegistry

    return ModelRegistry(_open_store(settings), settings.registry_dir, actor=actor)


def _version(args: argparse.Namespace, settings: AgentSettings) -> int:
    print(version(DISTRIBUTION))
    return 0


def _config(args: argparse.Namespace, settings: AgentSettings) -> int:
    print(json.dumps(settings.redacted(), indent=2, default=str))
    _print_routes(settings, out=sys.stderr)  # stdout stays the settings as JSON, for tools that read it
    return 0


def _print_routes(settings: AgentSettings, *, out: TextIO | None = None) -> None:
    """Where each enabled source's results go, and plainly which reach no sink (to ``out``, else stdout)."""
    from agent.routing import source_routes

    routes = source_routes(settings)
    print("where results go:" if routes else "where results go: no source is enabled", file=out)
    for route in routes:
        print(f"  {route.describe()}", file=out)


def _db(args: argparse.Namespace, settings: AgentSettings) -> int:
    _open_store(settings).dispose()
    print("database schema is up to date")
    return 0


def _os_user() -> str:
    # getpass fails for a uid with no account entry (containers run with arbitrary uids).
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


def _model(args: argparse.Namespace, settings: AgentSettings) -> int:
    registry = _registry(settings, args.actor or _os_user())
    action: Callable[[], int] = {
        "register": lambda: _print_change("registered", registry.register(args.path)),
        "list": lambda: _print_versions(registry.list()),
        "show": lambda: _print_show(registry, args.version, as_json=args.json),
        "shadow": lambda: _print_change("shadow", registry.shadow(args.version, reason=args.reason)),
        "promote": lambda: _promote(registry, args.version, args.reason),
        "retire": lambda: _print_change("retired", registry.retire(args.version, reason=args.reason)),
        "rollback": lambda: _print_change("rolled back to", registry.rollback(reason=args.reason)),
        "verify": lambda: _print_verify(registry.verify()),
        "history": lambda: _print_history(registry.history(args.version)),
        "shadow-report": lambda: _print_shadow_report(registry, args.version, settings),
    }[args.action]
    return action()


def _promote(registry: ModelRegistry, version: str, reason: str) -> int:
    note = registry.promotion_note(version)  # before the promote: it compares with the version active now
    _print_change("promoted", registry.promote(version, reason=reason))
    if note:
        print(f"note: {version} {note} (recorded in the audit reason)")
    return 0


def _print_show(registry: ModelRegistry, version: str, *, as_json: bool) -> int:
    from agent.registry import release_table_lines

    model = registry.get(version)
    if as_json:
        return _print_json(_describe(model, full=True))
    print(f"{model.version}: {model.state.value}, sha256 {model.sha256[:12]}, registered "
          f"{model.created_at.isoformat(timespec='seconds')}, model {model.manifest.get('model_name')}, "
          f"calibration {model.manifest.get('calibration') or 'none recorded'}")  # fmt: skip
    print("\n".join(release_table_lines(registry.release_table(version))))
    return 0


def _print_release_comparison(registry: ModelRegistry, active: str, shadow: str) -> bool:
    """Print both release tables side by side; True when the shadow charts nothing the active version does not."""
    from agent.registry import compare_release, release_comparison_lines

    changes = compare_release(registry.release_table(active), registry.release_table(shadow))
    print(f"release tables: active {active} vs shadow {shadow}")
    print("\n".join(release_comparison_lines(changes)))
    newly = [change.label for change in changes if change.newly_charted]
    if newly:
        print(f"review: the shadow would chart {len(newly)} label(s) the active version does not: {', '.join(newly)}")
    return not newly


def _print_shadow_report(registry: ModelRegistry, version: str | None, settings: AgentSettings) -> int:
    from agent.operations import shadow_report

    report = shadow_report(_open_store(settings), version)
    release_safe = _print_release_comparison(registry, report.active_version, report.shadow_version)
    print()
    print(f"active {report.active_version} vs shadow {report.shadow_version} on {report.n_studies} studies")
    print(f"{'label':<24} {'n':>6} {'pos active':>10} {'pos shadow':>10} {'agree':>6} {'mean|Δp|':>9}")
    for label in report.labels:
        print(f"{label.kind[:3]} {label.code:<20} {label.n:>6} {label.active_positive_rate:>10.3f} "
              f"{label.shadow_positive_rate:>10.3f} {label.agreement:>6.3f} {label.mean_abs_probability_diff:>9.3f}"
              f"{'' if label.looks_safe else '  <- review'}")  # fmt: skip
    print(report.verdict())
    return 0 if report.looks_safe and release_safe else 1


def _status(args: argparse.Namespace, settings: AgentSettings) -> int:
    from agent.operations import status

    view = status(_open_store(settings))
    active = f"{view.active.version} (sha256 {view.active.sha256[:12]})" if view.active else "none"
    refusal = view.active_refusal()
    print(f"active model: {active}" + (f"  ** {refusal}" if refusal else ""))
    print(f"shadow models: {', '.join(m.version for m in view.shadows) or 'none'}")
    print(f"backlog: {view.inbox_waiting} HL7 messages waiting, {view.outbox_pending} write-backs pending, "
          f"{view.outbox_parked} write-backs parked after their last attempt"
          + (" (ecg-agent outbox list; outbox requeue --all)" if view.outbox_parked else ""))  # fmt: skip
    quarantine = ", ".join(f"{kind} {count}" for kind, count in sorted(view.quarantine_open.items())) or "none"
    print(f"quarantine (open): {quarantine}")
    _print_routes(settings)
    for progress in view.backfills:
        print(_backfill_line(progress))
    print("last runs:" if view.runs else "last runs: none yet")
    for run in view.runs:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(run.counts.items())) or "-"
        took = f"{run.duration_s:.1f} s" if run.duration_s is not None else "running"
        error = f"  ({run.error})" if run.error else ""
        print(f"  run {run.id} {run.started_at.isoformat(timespec='seconds')} {run.status.value:<9} {took:>9}  "
              f"models {','.join(run.model_versions) or '-'}: {counts}{error}")  # fmt: skip
        for problem in run.problems:
            print(f"      - {problem}")
    return 0


def _backfill_line(progress: BackfillProgress) -> str:
    done, failed = progress.count(BackfillStatus.DONE), progress.count(BackfillStatus.FAILED)
    pending = progress.count(BackfillStatus.PENDING)
    counts = progress.counts
    line = (f"backfill {progress.backfill}: partitions {done} done, {failed} failed, {pending} pending of "
            f"{progress.total}; ECGs scored {counts.get('scored', 0)}, quarantined {counts.get('quarantined', 0)}, "
            f"already scored {counts.get('already_scored', 0)}")  # fmt: skip
    return line + (f"  (last failure: {progress.last_error}; run the backfill again)" if failed else "")


def _quarantine(args: argparse.Namespace, settings: AgentSettings) -> int:
    store = _open_store(settings)
    if args.action == "list":
        entries = store.list_quarantine(kind=args.kind, limit=args.limit)
        if not entries:
            print("quarantine is empty")
        for entry in entries:
            e = entry.entry
            last = entry.last_seen_at or entry.created_at
            print(f"{entry.id:>6} {e.kind:<16} {e.raw_ref}  seen {entry.seen_count}× "
                  f"(first {entry.created_at.isoformat(timespec='seconds')}, last {last.isoformat(timespec='seconds')})"
                  f"  from {e.origin}: {e.reason}")  # fmt: skip
        return 0
    from contextlib import ExitStack

    from agent.operations import retry_quarantined
    from agent.service import build_sources
    from agent.sources.fhir import FhirEcgSource

    with ExitStack() as stack:
        fhir = next((s for s in build_sources(settings, store, stack) if isinstance(s, FhirEcgSource)), None)
        result = retry_quarantined(store, args.quarantine_id, fhir=fhir)
    print(f"quarantine {result.quarantine_id}: {result.message}")
    return 0 if result.requeued else 1


def _outbox(args: argparse.Namespace, settings: AgentSettings) -> int:
    store = _open_store(settings)
    if args.action == "requeue":
        requeued = store.requeue_outbox(None if args.all else args.outbox_ids)
        print(f"requeued {requeued} parked write-back(s); the next run-once delivers them")
        return 0 if requeued else 1
    status = OutboxStatus.PENDING if args.pending else OutboxStatus.FAILED
    messages = store.list_outbox(status, limit=args.limit)
    if not messages:
        print(f"no {'pending' if args.pending else 'parked'} write-backs")
    for message in messages:
        print(f"{message.id:>6} {message.message.destination:<6} {message.message.idempotency_key}  "
              f"attempts {message.attempts}, last {message.updated_at.isoformat(timespec='seconds')}: "
              f"{message.last_error or '-'}")  # fmt: skip
    return 0


def _report(args: argparse.Namespace, settings: AgentSettings) -> int:
    from contextlib import ExitStack

    from agent.operations import study_report
    from agent.service import fhir_client
    from agent.sources.refetch import fetch_record
    from integrations.ecg_plot import PAGES

    store = _open_store(settings)
    study = store.get_study_by_id(args.study_id)
    version = args.model or (store.active_model_version().version if store.active_model_version() else None)
    if version is None:
        raise AgentError("no model is active: name the version with --model")
    with ExitStack() as stack:
        server = settings.sources.fhir.server
        fhir = stack.enter_context(fhir_client(server)) if server is not None else None
        record = fetch_record(
            study, store, fhir=fhir, wfdb_folder=settings.sources.wfdb.path, site_tz=settings.site.zone
        )
    path = args.png or args.pdf
    print(study_report(store, study, record, version, path, signal_notes=study.signal_notes, page=PAGES[args.paper]))
    return 0


def _describe(model: ModelVersion, *, full: bool = False) -> dict[str, object]:
    described: dict[str, object] = {
        "version": model.version,
        "state": model.state.value,
        "sha256": model.sha256,
        "path": model.path,
        "registered_at": model.created_at.isoformat(),
    }
    if full:
        manifest = model.manifest
        described |= {
            "model_name": manifest.get("model_name"),
            "diagnoses": len(manifest.get("diagnoses", [])),
            "lab_targets": len(manifest.get("lab_targets", [])),
            "input": manifest.get("input"),
            "metrics": manifest.get("metrics"),
            "data_fingerprint": manifest.get("data_fingerprint"),
        }
    return described


def _print_json(data: object) -> int:
    print(json.dumps(data, indent=2, default=str))
    return 0


def _print_change(what: str, model: ModelVersion) -> int:
    print(f"{what} {model.version} (sha256 {model.sha256[:12]}): now {model.state.value}")
    return 0


def _print_versions(models: list[ModelVersion]) -> int:
    if not models:
        print("no model versions registered (ecg-agent model register PATH)")
    for model in models:
        print(f"{model.version:<20} {model.state.value:<10} {model.sha256[:12]}  {model.path}")
    return 0


def _print_verify(results: list[VerifyResult]) -> int:
    for result in results:
        print(f"{result.version:<20} {'ok' if result.ok else 'FAILED':<6} {result.reason}")
    return 0 if all(result.ok for result in results) else 1


def _print_history(entries: list[ModelAuditEntry]) -> int:
    for entry in entries:
        before = entry.from_state.value if entry.from_state else "-"
        print(f"{entry.at.isoformat()}  {entry.actor:<12} {entry.version:<16} {before} → {entry.to_state.value}: "
              f"{entry.reason}")  # fmt: skip
    return 0


def _run_once(args: argparse.Namespace, settings: AgentSettings) -> int:
    from agent.service import AgentService

    outcome = AgentService(settings).run_once(since=args.since, progress=not args.no_progress)
    print(outcome.message)
    return outcome.exit_code


def _backfill(args: argparse.Namespace, settings: AgentSettings) -> int:
    from agent.backfill.archive import ArchiveRoots
    from agent.backfill.client import BackfillPlan, backfill

    roots = ArchiveRoots(wfdb=args.wfdb, fhir_ndjson=args.fhir_ndjson, hl7=args.hl7)
    if not roots.by_kind():
        raise AgentError("name at least one archive folder: --wfdb, --fhir-ndjson or --hl7")
    for folder in roots.by_kind().values():
        if not folder.is_dir():
            raise AgentError(f"archive folder {folder} does not exist")
    overrides = {"workers": args.workers, "files_per_partition": args.files_per_partition,
                 "scheduler": args.scheduler}  # fmt: skip
    chosen = {name: value for name, value in overrides.items() if value is not None}
    settings = settings.model_copy(update={"backfill": settings.backfill.model_copy(update=chosen)})
    plan = BackfillPlan(args.name, roots, config_file=args.config, secrets_dir=args.secrets_dir)
    report = backfill(settings, plan, progress=not args.no_progress)
    print(report.summary())
    return 1 if report.failed else 0


def _serve(args: argparse.Namespace, settings: AgentSettings) -> int:
    from agent.serving import serve

    serve(settings, config_file=args.config, secrets_dir=args.secrets_dir)
    return 0


def _listen(args: argparse.Namespace, settings: AgentSettings) -> int:
    from agent.serving import listen

    listen(settings)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, AgentSettings], int]] = {
    "version": _version,
    "config": _config,
    "db": _db,
    "model": _model,
    "run-once": _run_once,
    "backfill": _backfill,
    "status": _status,
    "quarantine": _quarantine,
    "outbox": _outbox,
    "report": _report,
    "serve": _serve,
    "listen": _listen,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(verbose=args.verbose)
    try:
        settings = load_settings(args.config, secrets_dir=args.secrets_dir)
        return COMMANDS[args.command](args, settings)
    except (AgentError, IntegrationError) as exc:
        print(f"ecg-agent {args.command}: error: {mask_secrets(str(exc))}", file=sys.stderr)
        return 1


def configure_logging(*, verbose: bool) -> None:
    """Log to stderr, with secrets masked in every line (httpx logs each request URL at INFO)."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    install_secret_masking(logging.getLogger())


if __name__ == "__main__":
    sys.exit(main())

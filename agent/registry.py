"""The model registry and its rollout: register, shadow, promote, rollback, retire, verify.

An artifact is copied into ``registry_dir/<version>/`` and recorded in the store with
its sha256; every state change writes an audit row (actor, time, from → to, reason),
so ``model history`` shows who did what and why. Exactly one version is active: the
store retires the previous active one in the same transaction as the promote.

Nothing is promoted without being verified again from the registry copy: a file that
no longer hashes to what was registered is refused, and the active model stays.

Each version's manifest carries its release table: per label, the validation metrics and
whether its positive calls are charted (written back) or stored only. ``release_table``
shows it, ``compare_release`` sets two versions side by side, and a promote that would
chart a label the current active version never charted says so in its audit reason.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent.errors import RegistryError
from agent.loader import ArtifactRefused, load_registered
from integrations.store import ModelAuditEntry, ModelState, ModelVersion, Store
from model_training.artifact import (
    MANIFEST_FILE,
    MODEL_FILE,
    Artifact,
    ArtifactError,
    Manifest,
    ReleaseEntry,
    ReleaseRule,
    load_artifact,
    sha256_hex,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    version: str
    ok: bool
    reason: str


@dataclass(frozen=True, slots=True)
class ReleaseRow:
    """One label of a version's release table; ``release`` is None for a manifest without one (schema 1)."""

    kind: str  # "diagnosis" | "lab"
    label: str  # ICD-10-CM code or lab target name
    display: str
    threshold: float
    release: ReleaseEntry | None

    @property
    def charted(self) -> bool:
        return self.release is not None and self.release.charted


@dataclass(frozen=True, slots=True)
class ReleaseView:
    """A version's release table and the rule that produced it (None: exported before release tables)."""

    version: str
    rule: ReleaseRule | None
    rows: tuple[ReleaseRow, ...]

    @property
    def charted(self) -> frozenset[tuple[str, str]]:
        return frozenset((row.kind, row.label) for row in self.rows if row.charted)


@dataclass(frozen=True, slots=True)
class ReleaseChange:
    """One label in two versions' release tables (None where a version lacks the label)."""

    kind: str
    label: str
    display: str
    before: ReleaseRow | None
    after: ReleaseRow | None

    @property
    def newly_charted(self) -> bool:
        return self.after is not None and self.after.charted and (self.before is None or not self.before.charted)

    @property
    def no_longer_charted(self) -> bool:
        return self.before is not None and self.before.charted and (self.after is None or not self.after.charted)


def release_view(model: ModelVersion) -> ReleaseView:
    """The release table of a registered version, read from the manifest recorded at registration."""
    try:
        manifest = Manifest.from_json(json.dumps(model.manifest), source=f"model {model.version}")
    except ArtifactError as exc:
        raise RegistryError(f"the manifest of {model.version} cannot be read: {exc}") from exc
    rows = [ReleaseRow("diagnosis", d.code, d.display, d.threshold, d.release) for d in manifest.diagnoses]
    rows += [ReleaseRow("lab", t.name, t.display, t.threshold, t.release) for t in manifest.lab_targets]
    return ReleaseView(model.version, manifest.release_rule, tuple(rows))


def compare_release(before: ReleaseView, after: ReleaseView) -> list[ReleaseChange]:
    """Every label of either version, in ``after``'s order then the labels only ``before`` has."""
    old = {(row.kind, row.label): row for row in before.rows}
    new = {(row.kind, row.label): row for row in after.rows}
    keys = list(new) + [key for key in old if key not in new]
    changes = []
    for key in keys:
        before, after = old.get(key), new.get(key)
        changes.append(ReleaseChange(*key, (after or before).display, before, after))
    return changes


def newly_charted_note(changes: list[ReleaseChange], active_version: str | None) -> str | None:
    """The sentence a promote adds to its audit reason when it charts labels the active version never charted."""
    labels = [change.label for change in changes if change.newly_charted]
    if not labels:
        return None
    since = f"than active {active_version}" if active_version else "(no version was active)"
    return f"charts {len(labels)} label(s) more {since}: {', '.join(labels)}"


class ModelRegistry:
    """Model versions in ``registry_dir`` and the store; ``actor`` is who the audit rows name."""

    def __init__(self, store: Store, registry_dir: Path, *, actor: str) -> None:
        self._store = store
        self._registry_dir = registry_dir
        self._actor = actor

    def register(self, artifact_dir: Path) -> ModelVersion:
        """Verify the artifact, copy it into the registry and record it as ``registered`` (idempotent per sha256)."""
        artifact = _load_verified(artifact_dir)
        version = artifact.manifest.model_version
        sha256 = artifact.manifest.model_sha256 or ""
        existing = self._store.get_model_version(version)
        if existing is not None and existing.sha256 != sha256:
            raise RegistryError(
                f"version {version} is already registered with another artifact (sha256 {existing.sha256[:12]}); "
                "export the new model under a new version"
            )
        destination = self._copy_in(artifact.path, version, sha256)
        manifest = json.loads((destination / MANIFEST_FILE).read_text())
        return self._store.register_model_version(version, sha256, str(destination), manifest, actor=self._actor)

    def get(self, version: str) -> ModelVersion:
        model = self._store.get_model_version(version)
        if model is None:
            raise RegistryError(f"no model version {version!r} is registered")
        return model

    def list(self) -> list[ModelVersion]:
        return self._store.list_model_versions()

    def shadow(self, version: str, *, reason: str) -> ModelVersion:
        """Score ``version`` next to the active model; its results are stored, never written back."""
        model = self.get(version)
        if model.state == ModelState.ACTIVE:
            raise RegistryError(f"version {version} is active; promote another version before shadowing it")
        self._verify_or_refuse(model)
        return self._store.set_model_state(version, ModelState.SHADOW, actor=self._actor, reason=reason)

    def promote(self, version: str, *, reason: str) -> ModelVersion:
        """Make ``version`` the one active model (the previous active one is retired in the same transaction).

        When ``version`` charts labels the active version does not, the audit reason names them.
        """
        model = self.get(version)
        if model.state == ModelState.ACTIVE:
            return model
        self._verify_or_refuse(model)
        note = self.promotion_note(version)
        audited = f"{reason} [{note}]" if note else reason
        return self._store.set_model_state(version, ModelState.ACTIVE, actor=self._actor, reason=audited)

    def promotion_note(self, version: str) -> str | None:
        """What promoting ``version`` adds to its audit reason: the labels it would newly chart (None: none)."""
        if self.get(version).state == ModelState.ACTIVE:
            return None
        return newly_charted_note(self.release_changes_on_promote(version), self._active_version())

    def release_table(self, version: str) -> ReleaseView:
        return release_view(self.get(version))

    def release_changes_on_promote(self, version: str) -> list[ReleaseChange]:
        """How the charted labels change if ``version`` replaces the active version (none active: none charted)."""
        candidate = self.release_table(version)
        active = self._store.active_model_version()
        current = release_view(active) if active is not None else ReleaseView("", None, ())
        return compare_release(current, candidate)

    def _active_version(self) -> str | None:
        active = self._store.active_model_version()
        return active.version if active is not None else None

    def rollback(self, *, reason: str) -> ModelVersion:
        """Promote the version that was active before the current one."""
        current = self._store.active_model_version()
        if current is None:
            raise RegistryError("no model is active, so there is nothing to roll back from")
        previous = self._previous_active(current.version)
        if previous is None:
            raise RegistryError(f"version {current.version} is the first active version; nothing to roll back to")
        return self.promote(previous, reason=f"rollback from {current.version}: {reason}")

    def retire(self, version: str, *, reason: str) -> ModelVersion:
        model = self.get(version)
        if model.state == ModelState.ACTIVE:
            raise RegistryError(f"version {version} is active; promote or roll back to another version first")
        return self._store.set_model_state(version, ModelState.RETIRED, actor=self._actor, reason=reason)

    def verify(self) -> list[VerifyResult]:
        """Re-hash every registered artifact against the sha256 recorded when it was registered."""
        return [self._verify(model) for model in self.list()]

    def history(self, version: str | None = None) -> list[ModelAuditEntry]:
        return self._store.model_audit(version)

    def _previous_active(self, current: str) -> str | None:
        activations = [entry.version for entry in self._store.model_audit() if entry.to_state == ModelState.ACTIVE]
        earlier = [version for version in activations if version != current]
        return earlier[-1] if earlier else None

    def _verify_or_refuse(self, model: ModelVersion) -> None:
        result = self._verify(model)
        if not result.ok:
            raise RegistryError(f"version {model.version} refused: {result.reason}")

    def _verify(self, model: ModelVersion) -> VerifyResult:
        try:
            load_registered(model)
        except ArtifactRefused as exc:
            return VerifyResult(model.version, False, str(exc))
        return VerifyResult(model.version, True, "sha256 and manifest verified")

    def _copy_in(self, source: Path, version: str, sha256: str) -> Path:
        """Copy model.ts + manifest.json to registry_dir/<version>, atomically (a crash leaves no half copy)."""
        destination = self._registry_dir / version
        if destination.exists():
            if sha256_hex((destination / MODEL_FILE).read_bytes()) == sha256:
                return destination
            raise RegistryError(f"{destination} exists and holds another artifact; refusing to overwrite it")
        self._registry_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=self._registry_dir))
        try:
            for name in (MODEL_FILE, MANIFEST_FILE):
                shutil.copy2(source / name, staging / name)
            staging.rename(destination)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise RegistryError(f"cannot copy the artifact into {destination}: {exc}") from exc
        log.info("copied model %s (sha256 %s) into %s", version, sha256[:12], destination)
        return destination


def _load_verified(artifact_dir: Path) -> Artifact:
    try:
        return load_artifact(artifact_dir)
    except ArtifactError as exc:
        raise RegistryError(f"cannot register {artifact_dir}: {exc}") from exc


# ---------------------------------------------------------------- as text (ecg-agent model show / shadow-report)


def _num(value: float | None, width: int = 5) -> str:
    return f"{'–':>{width}}" if value is None else f"{value:>{width}.3f}"


def _rule_line(rule: ReleaseRule | None) -> str:
    if rule is None:
        return "release rule: none (exported before release tables): every label is stored only"
    floors = f"CI low >= {rule.min_auroc_ci_low:.2f} and PPV >= {rule.min_ppv:.2f}"
    return (f"release rule: chart when the {rule.fold} AUROC's {rule.ci_level:.0%} {floors} (at the "
            f"{rule.prevalence}'s prevalence; {rule.n_bootstrap} bootstrap resamples) with at least "
            f"{rule.min_positives} positives")  # fmt: skip


def _release_line(row: ReleaseRow) -> str:
    head = f"{row.kind[:3]:<4} {row.label:<16} {row.display[:40]:<40}"
    entry = row.release
    if entry is None:
        return f"{head} {'–':<21} {row.threshold:>6.3f} {'':>5} {'':>5} {'':>5} {'':>5}  stored (no release entry)"
    auroc = f"{_num(entry.auroc).strip()} [{_num(entry.auroc_ci_low).strip()}, {_num(entry.auroc_ci_high).strip()}]"
    return (f"{head} {auroc:<21} {row.threshold:>6.3f} {_num(entry.sensitivity)} {_num(entry.specificity)} "
            f"{_num(entry.ppv)} {_num(entry.prevalence)}  {'charted' if entry.charted else 'stored'}")  # fmt: skip


def release_table_lines(view: ReleaseView) -> list[str]:
    """The rule, a header, one line per label (AUROC [CI], threshold, sens, spec, PPV, prevalence, release), a total."""
    header = (f"{'kind':<4} {'label':<16} {'name':<40} {'AUROC [95 % CI]':<21} {'thresh':>6} {'sens':>5} "
              f"{'spec':>5} {'PPV':>5} {'prev':>5}  release")  # fmt: skip
    total = f"{len(view.charted)} of {len(view.rows)} labels charted; the rest are stored only"
    return [_rule_line(view.rule), header, *(_release_line(row) for row in view.rows), total]


def _field(row: ReleaseRow | None, name: str) -> float | None:
    return getattr(row.release, name) if row is not None and row.release is not None else None


def _state(row: ReleaseRow | None) -> str:
    if row is None:
        return "absent"
    return "charted" if row.charted else "stored"


def release_comparison_lines(changes: list[ReleaseChange]) -> list[str]:
    """A header and one line per label: AUROC and PPV in both versions, charted/stored before -> after."""
    lines = [f"{'kind':<4} {'label':<16} {'name':<40} {'AUROC act':>9} {'AUROC sh':>9} {'PPV act':>7} "
             f"{'PPV sh':>7}  active -> shadow"]  # fmt: skip
    for change in changes:
        before, after = change.before, change.after
        marker = ""
        if change.newly_charted:
            marker = "  <- newly charted"
        elif change.no_longer_charted:
            marker = "  <- no longer charted"
        lines.append(
            f"{change.kind[:3]:<4} {change.label:<16} {change.display[:40]:<40} "
            f"{_num(_field(before, 'auroc'), 9)} {_num(_field(after, 'auroc'), 9)} "
            f"{_num(_field(before, 'ppv'), 7)} {_num(_field(after, 'ppv'), 7)}  {_state(before)} -> {_state(after)}"
            f"{marker}"
        )
    return lines

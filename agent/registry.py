"""The model registry and its rollout: register, shadow, promote, rollback, retire, verify.

An artifact is copied into ``registry_dir/<version>/`` and recorded in the store with
its sha256; every state change writes an audit row (actor, time, from → to, reason),
so ``model history`` shows who did what and why. Exactly one version is active: the
store retires the previous active one in the same transaction as the promote.

Nothing is promoted without being verified again from the registry copy: a file that
no longer hashes to what was registered is refused, and the active model stays.
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
from model_training.artifact import MANIFEST_FILE, MODEL_FILE, Artifact, ArtifactError, load_artifact, sha256_hex

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    version: str
    ok: bool
    reason: str


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
        """Make ``version`` the one active model (the previous active one is retired in the same transaction)."""
        model = self.get(version)
        if model.state == ModelState.ACTIVE:
            return model
        self._verify_or_refuse(model)
        return self._store.set_model_state(version, ModelState.ACTIVE, actor=self._actor, reason=reason)

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

"""Which models score this run: the active one and any shadows, verified on every load.

Each run asks the store which versions are active and in shadow, so a promote takes
effect at the next run without a restart. Every load re-hashes ``model.ts`` against
the sha256 recorded at registration. A version whose file no longer matches is
refused; if it was meant to replace the model this process is already serving, the
previous model keeps serving and the refusal is reported, never silently skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from integrations.store import ModelVersion, Store
from model_training.artifact import MODEL_FILE, Artifact, ArtifactError, load_artifact, sha256_hex

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadedModel:
    version: str
    sha256: str
    artifact: Artifact


@dataclass(frozen=True, slots=True)
class RunModels:
    """The models for one run; ``refusals`` names every version that could not be loaded and why."""

    active: LoadedModel | None
    shadows: tuple[LoadedModel, ...]
    refusals: tuple[str, ...] = field(default=())


class ModelLoader:
    """Loads registered artifacts for runs, keeping verified ones cached by sha256."""

    def __init__(self, store: Store, *, map_location: str = "cpu") -> None:
        self._store = store
        self._map_location = map_location
        self._cache: dict[str, LoadedModel] = {}
        self._serving: LoadedModel | None = None

    def load_for_run(self) -> RunModels:
        refusals: list[str] = []
        active = self._load_active(refusals)
        shadows = []
        for model in self._store.shadow_model_versions():
            loaded = self._load(model, refusals)
            if loaded is not None:
                shadows.append(loaded)
        return RunModels(active=active, shadows=tuple(shadows), refusals=tuple(refusals))

    def _load_active(self, refusals: list[str]) -> LoadedModel | None:
        wanted = self._store.active_model_version()
        if wanted is None:
            refusals.append("no model version is active (ecg-agent model promote VERSION)")
            return self._serving
        loaded = self._load(wanted, refusals)
        if loaded is None:
            if self._serving is not None:
                refusals.append(f"still serving version {self._serving.version}")
                log.error("active version %s refused; still serving %s", wanted.version, self._serving.version)
            return self._serving
        if self._serving is None or self._serving.version != loaded.version:
            log.info("serving model version %s (sha256 %s)", loaded.version, loaded.sha256[:12])
        self._serving = loaded
        return loaded

    def _load(self, model: ModelVersion, refusals: list[str]) -> LoadedModel | None:
        try:
            loaded = load_registered(model, map_location=self._map_location, cached=self._cache.get(model.version))
        except ArtifactRefused as exc:
            refusals.append(f"version {model.version}: {exc}")
            self._cache.pop(model.version, None)
            return None
        self._cache[model.version] = loaded
        return loaded


class ArtifactRefused(Exception):
    """A registered artifact that must not serve; the message says why (unreadable, tampered, invalid)."""


def load_registered(
    model: ModelVersion, *, map_location: str = "cpu", cached: LoadedModel | None = None
) -> LoadedModel:
    """Re-hash the registry copy against the sha256 recorded at registration, then load and verify it.

    ``cached`` is reused when the file still hashes to it, so a run does not re-load an unchanged model.
    """
    model_file = Path(model.path) / MODEL_FILE
    try:
        actual = sha256_hex(model_file.read_bytes())
    except OSError as exc:
        raise ArtifactRefused(f"{model_file} cannot be read ({exc.strerror or exc})") from exc
    if actual != model.sha256:
        raise ArtifactRefused(
            f"{model_file} sha256 {actual[:12]} does not match the registered {model.sha256[:12]} "
            "(tampered or replaced)"
        )
    if cached is not None and cached.sha256 == actual:
        return cached
    try:
        artifact = load_artifact(Path(model.path), map_location=map_location)
    except ArtifactError as exc:
        raise ArtifactRefused(str(exc)) from exc
    return LoadedModel(version=model.version, sha256=actual, artifact=artifact)

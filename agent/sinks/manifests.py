"""Manifest labels by model version, for sinks that send results nights after they were scored."""

from __future__ import annotations

import json
import logging
import threading
from typing import TypeVar

from agent.errors import AgentError
from integrations.store import Store
from model_training.artifact import ArtifactError, DiagnosisLabel, LabTargetLabel, Manifest, ReleaseRule

log = logging.getLogger(__name__)
_Label = TypeVar("_Label", DiagnosisLabel, LabTargetLabel)


class UnknownModelVersionError(AgentError):
    """An outbox payload names a model version the registry does not have, or a code its manifest lacks."""


class ManifestIndex:
    """Manifest labels by model version, read from the registry rows (a sink may send an older version's results).

    Shared by the sinks' worker threads: each version is read from the store once, under a lock. A
    manifest without a release table (schema 1) charts nothing: every label's ``charted`` is False,
    and that is logged once per version, so an operator sees why a model writes nothing back.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._by_version: dict[str, Manifest] = {}
        self._lock = threading.Lock()

    def diagnosis(self, version: str, code: str) -> DiagnosisLabel:
        labels = {label.code: label for label in self.manifest(version).diagnoses}
        return self._entry(labels, version, "diagnosis", code)

    def lab(self, version: str, name: str) -> LabTargetLabel:
        targets = {target.name: target for target in self.manifest(version).lab_targets}
        return self._entry(targets, version, "lab target", name)

    def release_rule(self, version: str) -> ReleaseRule | None:
        """The rule the version's release table was decided by; None for a schema-1 manifest."""
        return self.manifest(version).release_rule

    @staticmethod
    def _entry(entries: dict[str, _Label], version: str, what: str, key: str) -> _Label:
        try:
            return entries[key]
        except KeyError:
            raise UnknownModelVersionError(f"model version {version} has no {what} {key!r} in its manifest") from None

    def manifest(self, version: str) -> Manifest:
        with self._lock:
            if version not in self._by_version:
                self._by_version[version] = self._load(version)
            return self._by_version[version]

    def _load(self, version: str) -> Manifest:
        model = self._store.get_model_version(version)
        if model is None:
            raise UnknownModelVersionError(f"model version {version} is not registered")
        try:
            manifest = Manifest.from_json(json.dumps(model.manifest), source=f"model version {version}")
        except ArtifactError as exc:
            raise UnknownModelVersionError(
                f"model version {version}: its stored manifest is unreadable: {exc}"
            ) from exc
        if manifest.release_rule is None:
            log.warning(
                "model version %s has no release table (manifest schema %s): none of its findings is written "
                "back to the chart; they stay stored",
                version,
                manifest.schema_version,
            )
        return manifest

"""Manifest labels by model version, for sinks that send results nights after they were scored."""

from __future__ import annotations

import threading
from typing import Any

from agent.errors import AgentError
from integrations.store import Store


class UnknownModelVersionError(AgentError):
    """An outbox payload names a model version the registry does not have, or a code its manifest lacks."""


class ManifestIndex:
    """Manifest codes by model version, read from the registry rows (a sink may send an older version's results).

    Shared by the sinks' worker threads: each version is read from the store once, under a lock.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._by_version: dict[str, tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def diagnosis(self, version: str, code: str) -> dict[str, Any]:
        return self._entry(self._labels(version)[0], version, "diagnosis", code)

    def lab(self, version: str, name: str) -> dict[str, Any]:
        return self._entry(self._labels(version)[1], version, "lab target", name)

    @staticmethod
    def _entry(entries: dict[str, dict[str, Any]], version: str, what: str, key: str) -> dict[str, Any]:
        try:
            return entries[key]
        except KeyError:
            raise UnknownModelVersionError(f"model version {version} has no {what} {key!r} in its manifest") from None

    def _labels(self, version: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        with self._lock:
            if version not in self._by_version:
                self._by_version[version] = self._load(version)
            return self._by_version[version]

    def _load(self, version: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        model = self._store.get_model_version(version)
        if model is None:
            raise UnknownModelVersionError(f"model version {version} is not registered")
        manifest = model.manifest
        return (
            {label["code"]: label for label in manifest["diagnoses"]},
            {target["name"]: target for target in manifest["lab_targets"]},
        )

"""Fixtures shared across the test packages: the real FHIR engine (Medplum behind tests/servers/fhir/server.mjs).

The server needs Node >= 20 and ``npm ci --prefix tests/servers/fhir`` (``make test`` runs it); without its
node_modules the tests that use it fail with that instruction rather than reaching the network. The launcher
lives in scripts/fhir_test_server.py, shared with ``make demo``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

_LAUNCHER = Path(__file__).resolve().parents[1] / "scripts" / "fhir_test_server.py"


def _launcher():
    spec = importlib.util.spec_from_file_location("fhir_test_server", _LAUNCHER)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="session")
def fhir_base_url() -> Iterator[str]:
    """Start the Medplum FHIR shim on a free port; yield its FHIR base URL; stop it."""
    launcher = _launcher()
    try:
        # The shim's shortcuts checked on every search; small export files, so that exports of a few ECGs span several.
        server = launcher.fhir_test_server(check_fast_paths=True, export_file_resources=3)
        base_url = server.__enter__()
    except launcher.FhirServerError as exc:
        pytest.fail(str(exc))
    try:
        yield base_url
    finally:
        server.__exit__(None, None, None)

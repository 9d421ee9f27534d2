"""Fixtures shared across the test packages: the real FHIR engine (Medplum behind tests/servers/fhir/server.mjs).

The server needs Node >= 20 and ``npm ci --prefix tests/servers/fhir`` (``make test`` runs it); without its
node_modules the tests that use it fail with that instruction rather than reaching the network.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

FHIR_SERVER_DIR = Path(__file__).resolve().parent / "servers" / "fhir"
FHIR_SERVER_START_TIMEOUT_S = 60.0
#: Medplum 5 wants Node 22; on Node 20 the WebSocket global it touches at import is behind this flag.
NODE_22_MAJOR = 22


def _node_command() -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH; the FHIR integration tests need Node >= 20")
    if not (FHIR_SERVER_DIR / "node_modules").is_dir():
        pytest.fail(f"{FHIR_SERVER_DIR / 'node_modules'} is missing: run `npm ci --prefix {FHIR_SERVER_DIR}` first")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    major = int(re.match(r"v(\d+)", version.strip()).group(1))  # type: ignore[union-attr]
    flags = ["--experimental-websocket"] if major < NODE_22_MAJOR else []
    return [node, *flags, str(FHIR_SERVER_DIR / "server.mjs"), "0"]


def _read_port(process: subprocess.Popen[str]) -> int:
    """Wait for the shim's ``listening <port>`` line (read in a thread so a hung start cannot block us)."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(FHIR_SERVER_START_TIMEOUT_S)
    match = re.match(r"listening (\d+)", lines[0]) if lines else None
    if match is None:
        process.kill()
        _, stderr = process.communicate(timeout=10)
        pytest.fail(f"the FHIR shim did not start within {FHIR_SERVER_START_TIMEOUT_S} s: {stderr[-2000:]}")
    return int(match.group(1))


@pytest.fixture(scope="session")
def fhir_base_url() -> Iterator[str]:
    """Start the Medplum FHIR shim on a free port; yield its FHIR base URL; stop it."""
    process = subprocess.Popen(
        _node_command(), cwd=FHIR_SERVER_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        port = _read_port(process)
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()

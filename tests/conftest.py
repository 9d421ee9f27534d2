"""Fixtures shared across the test packages: the real FHIR engine (Medplum behind tests/servers/fhir/server.mjs) and a
throwaway PostgreSQL cluster.

The server needs Node >= 20 and ``npm ci --prefix tests/servers/fhir`` (``make test`` runs it); without its
node_modules the tests that use it fail with that instruction rather than reaching the network. The launcher
lives in scripts/fhir_test_server.py, shared with ``make demo``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_LAUNCHER = Path(__file__).resolve().parents[1] / "scripts" / "fhir_test_server.py"
POSTGRES_ROOT = Path("/usr/lib/postgresql")
POSTGRES_START_TIMEOUT_S = 60
POSTGRES_DATABASE = "test"


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


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``postgresql+psycopg://postgres@127.0.0.1:PORT/test`` on a throwaway cluster, stopped at session end.

    Fails (not skips) without the server binaries: CI installs them (``.ci/system-deps``).
    """
    bin_dir = _postgres_bin_dir()
    # Not under pytest's tmp dir: that is private to root, and the server runs as the postgres user.
    root = Path(tempfile.mkdtemp(prefix="pytest-postgres-"))
    data_dir, socket_dir = root / "data", root / "socket"
    socket_dir.mkdir()
    _give_to_postgres_user(root)
    port = _free_port()
    _as_postgres(bin_dir / "initdb", "-D", data_dir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
    # Durability off: a throwaway cluster, and the machine is shared.
    options = f"-h 127.0.0.1 -p {port} -k {socket_dir} -F -c synchronous_commit=off -c full_page_writes=off"
    _as_postgres(
        bin_dir / "pg_ctl", "-D", data_dir, "-o", options, "-l", root / "server.log",
        "-w", "-t", str(POSTGRES_START_TIMEOUT_S), "start",
    )  # fmt: skip
    try:
        _as_postgres(bin_dir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", POSTGRES_DATABASE)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{POSTGRES_DATABASE}"
    finally:
        _as_postgres(bin_dir / "pg_ctl", "-D", data_dir, "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _postgres_bin_dir() -> Path:
    candidates = sorted(POSTGRES_ROOT.glob("*/bin/initdb"), key=lambda path: int(path.parent.parent.name))
    if not candidates:
        pytest.fail(
            f"PostgreSQL server binaries not found under {POSTGRES_ROOT}/*/bin; "
            "install them (Debian/Ubuntu: apt-get install postgresql) or run .ci/system-deps"
        )
    return candidates[-1].parent


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _give_to_postgres_user(path: Path) -> None:
    # initdb refuses to run as root; as any other user the cluster simply belongs to that user.
    if _running_as_root():
        shutil.chown(path, "postgres", "postgres")
        for child in path.iterdir():
            shutil.chown(child, "postgres", "postgres")


def _as_postgres(*command: str | Path) -> None:
    argv = [str(part) for part in command]
    if _running_as_root():
        argv = ["runuser", "-u", "postgres", "--", *argv]
    completed = subprocess.run(argv, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {completed.returncode}:\n{completed.stdout}\n{completed.stderr}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])

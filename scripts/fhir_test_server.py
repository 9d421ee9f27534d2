"""Start the local FHIR test server: Medplum's FHIR engine behind tests/servers/fhir/server.mjs.

Used by the test fixture (tests/conftest.py) and by ``make demo``. It is a test peer, not a
production FHIR server: everything lives in memory and is gone when it stops.

    python scripts/fhir_test_server.py     # runs until Ctrl-C, prints its base URL
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SERVER_DIR = Path(__file__).resolve().parents[1] / "tests" / "servers" / "fhir"
LOG_FILE = SERVER_DIR / "server.log"
START_TIMEOUT_S = 60.0
#: Medplum 5 wants Node 22; on Node 20 the WebSocket global it touches at import is behind this flag.
NODE_22_MAJOR = 22


class FhirServerError(RuntimeError):
    """The test server cannot start; the message says what to install or what it printed."""


def node_command(
    port: int = 0,
    *,
    check_fast_paths: bool = False,
    export_polls: int | None = None,
    export_file_resources: int | None = None,
) -> list[str]:
    node = shutil.which("node")
    if node is None:
        raise FhirServerError("node is not on PATH; the FHIR test server needs Node >= 20")
    if not (SERVER_DIR / "node_modules").is_dir():
        raise FhirServerError(f"{SERVER_DIR / 'node_modules'} is missing: run `npm ci --prefix {SERVER_DIR}` first")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    major = int(re.match(r"v(\d+)", version.strip()).group(1))  # type: ignore[union-attr]
    flags = ["--experimental-websocket"] if major < NODE_22_MAJOR else []
    options = ["--check-fast-paths"] if check_fast_paths else []
    if export_polls is not None:
        options.append(f"--export-polls={export_polls}")
    if export_file_resources is not None:
        options.append(f"--export-file-resources={export_file_resources}")
    return [node, *flags, str(SERVER_DIR / "server.mjs"), str(port), *options]


def _read_port(process: subprocess.Popen[str]) -> int:
    """Wait for the shim's ``listening <port>`` line (read in a thread so a hung start cannot block us)."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(START_TIMEOUT_S)
    match = re.match(r"listening (\d+)", lines[0]) if lines else None
    if match is None:
        process.kill()
        process.wait(timeout=10)
        process.stdout.close()  # type: ignore[union-attr]
        printed = LOG_FILE.read_text(errors="replace")[-2000:] if LOG_FILE.exists() else ""
        raise FhirServerError(f"the FHIR test server did not start within {START_TIMEOUT_S} s: {printed}")
    return int(match.group(1))


@contextmanager
def fhir_test_server(
    port: int = 0,
    *,
    check_fast_paths: bool = False,
    export_polls: int | None = None,
    export_file_resources: int | None = None,
) -> Iterator[str]:
    """Run the server on 127.0.0.1 (a free port by default); yield its FHIR base URL; stop it.

    ``check_fast_paths``: answer every search Medplum's way too and fail on a difference (the tests' server).
    ``export_polls``: how many polls of a Bulk Data export's status URL answer 202 before the manifest (default 2);
    ``export_file_resources``: the most resources in one export file (default 1000).
    """
    # stderr to a file, not a pipe: a chatty server must never block on a full pipe nobody reads.
    with LOG_FILE.open("w") as log:
        command = node_command(
            port,
            check_fast_paths=check_fast_paths,
            export_polls=export_polls,
            export_file_resources=export_file_resources,
        )
        process = subprocess.Popen(command, cwd=SERVER_DIR, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            yield f"http://127.0.0.1:{_read_port(process)}/fhir"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.stdout.close()  # type: ignore[union-attr]


if __name__ == "__main__":
    try:
        with fhir_test_server() as base_url:
            print(base_url, flush=True)
            threading.Event().wait()
    except KeyboardInterrupt:
        sys.exit(0)

"""deploy/: every file that runs the agent in a hospital agrees with the CLI and the settings, and its commands run.

The systemd units' commands are executed for real (with the config and the credentials folder replaced by
temporary ones); the Containerfile and the Kubernetes manifests are parsed and their command lines checked with
the CLI's own parser and the settings' own loader. Building the image and applying the manifests need a container
engine and a cluster: not done here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from agent.cli import _parser
from agent.settings import DEFAULT_CRON, DEFAULT_MLLP_PORT, AgentSettings, load_settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
EXAMPLE = DEPLOY / "agent.example.toml"
SYSTEMD = DEPLOY / "systemd"
SERVE_UNIT = SYSTEMD / "ecg-agent.service"
RUN_ONCE_UNIT = SYSTEMD / "ecg-agent-run-once.service"
TIMER_UNIT = SYSTEMD / "ecg-agent-run-once.timer"
CONTAINERFILE = DEPLOY / "Containerfile"
KUBERNETES = DEPLOY / "kubernetes"

#: What the units name; the tests substitute a temporary config and the installed ecg-agent.
UNIT_EXECUTABLE = "/opt/ecg-agent/bin/ecg-agent"
UNIT_CONFIG = "/etc/ecg-agent/agent.toml"
STATE_DIR = PurePosixPath("/var/lib/ecg-agent")
#: Settings that name secret files: on Kubernetes they must come from the Secret, not the ConfigMap.
SECRET_FILE_SETTINGS = {"bearer_token_file", "private_key_file", "key_file"}
#: Keep the FHIR source and write-back off: the commands must run without a FHIR server.
NO_FHIR = {"ECG_AGENT_SOURCES__FHIR__ENABLED": "false", "ECG_AGENT_SINKS__FHIR__ENABLED": "false"}
COMMAND_TIMEOUT_S = 60


@pytest.fixture(autouse=True)
def _no_agent_environment(monkeypatch):
    for name in [n for n in os.environ if n.startswith("ECG_AGENT_")]:
        monkeypatch.delenv(name)


def ecg_agent() -> list[str]:
    """The installed ``ecg-agent`` (beside this Python, else on PATH), else ``python -m agent.cli``."""
    beside = Path(sys.executable).with_name("ecg-agent")
    found = str(beside) if beside.is_file() else shutil.which("ecg-agent")
    return [found] if found else [sys.executable, "-m", "agent.cli"]


def run_agent(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env={**os.environ, **env}, cwd=REPO, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )


# --- systemd -----------------------------------------------------------------------------------------------------


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values...]}}; keys like LoadCredential= may repeat."""
    sections: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section].get(key, [])
    assert len(values) == 1, f"[{section}] {key}= should be set once, is {values}"
    return values[0]


class SystemdHost:
    """A stand-in for the hospital server: a temporary agent.toml and a credentials folder filled as
    systemd would fill it from the unit's LoadCredential= lines (the database credential is a SQLite file)."""

    def __init__(self, root: Path, unit: dict[str, dict[str, list[str]]]) -> None:
        self.config = root / "etc" / "agent.toml"
        self.config.parent.mkdir()
        shutil.copy(EXAMPLE, self.config)
        self.database = root / "state" / "agent.db"
        self.database.parent.mkdir()
        self.credentials = root / "credentials"
        self.credentials.mkdir()
        for credential in unit["Service"].get("LoadCredential", []):
            name = credential.partition(":")[0]
            secret = f"sqlite:///{self.database}" if name == "ECG_AGENT_DATABASE_URL" else "not a real secret\n"
            (self.credentials / name).write_text(secret)
        self.environment = dict(NO_FHIR)
        for assignments in unit["Service"].get("Environment", []):
            for assignment in shlex.split(assignments):
                name, _, value = assignment.partition("=")
                self.environment[name] = value.replace("%d", str(self.credentials))

    def command(self, exec_line: str) -> list[str]:
        """An Exec*= line as this host runs it: ${CREDENTIALS_DIRECTORY} and the config path substituted."""
        argv = shlex.split(exec_line.replace("${CREDENTIALS_DIRECTORY}", str(self.credentials)))
        assert argv[0] == UNIT_EXECUTABLE
        return ecg_agent() + [str(self.config) if arg == UNIT_CONFIG else arg for arg in argv[1:]]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_systemd_units_pass_systemd_analyze_verify_without_a_warning(tmp_path):
    executable = ecg_agent()[0]  # verify checks that the command exists: point it at the installed one
    units = (SERVE_UNIT, RUN_ONCE_UNIT, TIMER_UNIT)
    for unit in units:
        (tmp_path / unit.name).write_text(unit.read_text().replace(UNIT_EXECUTABLE, executable))
    verified = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(f"./{unit.name}" for unit in units)],
        cwd=tmp_path, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
    )  # fmt: skip
    assert (verified.returncode, verified.stderr) == (0, "")


def test_the_serve_unit_upgrades_the_database_then_serves_as_a_hardened_dedicated_user():
    unit = read_unit(SERVE_UNIT)
    pre, start = one(unit, "Service", "ExecStartPre"), one(unit, "Service", "ExecStart")
    for line, command, action in ((pre, "db", "upgrade"), (start, "serve", None)):
        argv = shlex.split(line)
        assert argv[0] == UNIT_EXECUTABLE
        args = _parser().parse_args(argv[1:])
        assert (args.command, getattr(args, "action", None)) == (command, action)
        assert (str(args.config), str(args.secrets_dir)) == (UNIT_CONFIG, "${CREDENTIALS_DIRECTORY}")
    service = {key: values[-1] for key, values in unit["Service"].items()}
    assert service["User"] == "ecg-agent" and service["StateDirectory"] == "ecg-agent"
    assert service["Restart"] == "on-failure"
    assert (service["ProtectSystem"], service["ProtectHome"]) == ("strict", "yes")
    assert (service["NoNewPrivileges"], service["PrivateTmp"]) == ("yes", "yes")
    assert service["ReadWritePaths"] == str(STATE_DIR)
    assert one(unit, "Install", "WantedBy") == "multi-user.target"


def test_the_example_config_writes_only_inside_the_state_directory_the_units_make_writable():
    settings = load_settings(EXAMPLE)
    database = settings.database_url.get_secret_value().removeprefix("sqlite:///")
    for path in (PurePosixPath(database), PurePosixPath(settings.registry_dir)):
        assert path.is_relative_to(STATE_DIR), path


def test_the_serve_units_database_upgrade_runs_against_the_database_url_credential(tmp_path):
    unit = read_unit(SERVE_UNIT)
    host = SystemdHost(tmp_path, unit)
    upgraded = run_agent(host.command(one(unit, "Service", "ExecStartPre")), host.environment)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "database schema is up to date" in upgraded.stdout
    assert host.database.is_file()  # the credential, not the config's sqlite:////var/lib/..., chose the database


def test_the_serve_unit_starts_serving_and_stops_cleanly_on_sigterm(tmp_path):
    unit = read_unit(SERVE_UNIT)
    host = SystemdHost(tmp_path, unit)
    assert run_agent(host.command(one(unit, "Service", "ExecStartPre")), host.environment).returncode == 0
    argv = host.command(one(unit, "Service", "ExecStart"))
    with subprocess.Popen(
        argv, env={**os.environ, **host.environment}, cwd=REPO, stderr=subprocess.PIPE, text=True
    ) as serving:
        try:
            seen = []
            for line in serving.stderr:  # type: ignore[union-attr]
                seen.append(line)
                if line.startswith("INFO apscheduler.scheduler: Scheduler started"):
                    break
            else:
                pytest.fail(f"serve exited with {serving.wait()} before serving:\n{''.join(seen[-5:])}")
            assert any(line.startswith("INFO agent.serving: serving: next run") for line in seen)
            serving.send_signal(signal.SIGTERM)  # what `systemctl stop` sends
            assert serving.wait(timeout=COMMAND_TIMEOUT_S) == 0
        finally:
            if serving.poll() is None:
                serving.kill()


def test_the_timers_run_once_service_runs_and_reports_that_no_model_is_active(tmp_path):
    unit = read_unit(RUN_ONCE_UNIT)
    assert one(unit, "Service", "Type") == "oneshot"
    host = SystemdHost(tmp_path, unit)
    argv = host.command(one(unit, "Service", "ExecStart"))
    args = _parser().parse_args(argv[len(ecg_agent()) :])
    assert (args.command, args.no_progress) == ("run-once", True)
    ran = run_agent(argv, host.environment)
    assert ran.returncode == 1, ran.stdout + ran.stderr  # a failed run is reported, not hidden
    assert "no model version is active" in ran.stdout


def test_the_timer_starts_the_run_once_service_at_the_default_schedule_catching_up_a_missed_night_once():
    timer = read_unit(TIMER_UNIT)
    minute, hour, *every_day = DEFAULT_CRON.split()
    assert every_day == ["*", "*", "*"]
    assert one(timer, "Timer", "OnCalendar") == f"*-*-* {int(hour):02d}:{int(minute):02d}:00"
    assert one(timer, "Timer", "Persistent") == "true"
    delay = re.fullmatch(r"(\d+)min", one(timer, "Timer", "RandomizedDelaySec"))
    assert delay and int(delay[1]) <= 15
    assert one(timer, "Timer", "Unit") == RUN_ONCE_UNIT.name
    assert one(timer, "Install", "WantedBy") == "timers.target"


def test_both_systemd_ways_run_as_the_same_user_with_the_same_credentials_and_sandbox():
    how_it_runs = {"Type", "ExecStart", "ExecStartPre", "Restart", "RestartSec", "TimeoutStartSec", "TimeoutStopSec"}

    def sandbox(path: Path) -> dict[str, list[str]]:
        return {key: values for key, values in read_unit(path)["Service"].items() if key not in how_it_runs}

    assert sandbox(RUN_ONCE_UNIT) == sandbox(SERVE_UNIT)
    for path in (SERVE_UNIT, RUN_ONCE_UNIT, TIMER_UNIT):
        assert "not both" in path.read_text(), f"{path.name} should say: the serve unit or the timer, not both"


# --- container ---------------------------------------------------------------------------------------------------


def containerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in CONTAINERFILE.read_text().splitlines()
                                          if not line.lstrip().startswith("#")))  # fmt: skip
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def test_the_container_runs_ecg_agent_serve_and_its_command_line_checks_the_example_config():
    instructions = containerfile_instructions()
    entrypoint = [json.loads(args) for name, args in instructions if name == "ENTRYPOINT"]
    cmd = [json.loads(args) for name, args in instructions if name == "CMD"]
    assert entrypoint == [["ecg-agent"]]
    args = _parser().parse_args(cmd[-1])
    assert (args.command, str(args.config)) == ("serve", UNIT_CONFIG)
    options = [str(EXAMPLE) if arg == UNIT_CONFIG else arg for arg in cmd[-1] if arg != "serve"]
    checked = run_agent([*ecg_agent(), *options, "config", "check"], {})
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["schedule"]["cron"] == DEFAULT_CRON


def test_the_container_installs_the_cpu_torch_pinned_in_pyproject_before_the_project_wheel():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    (torch_pin,) = [pin for pin in pyproject["project"]["dependencies"] if pin.startswith("torch==")]
    runs = [args for name, args in containerfile_instructions() if name == "RUN"]
    (torch_index,) = [i for i, run in enumerate(runs) if torch_pin in run.split()]
    assert "--index-url https://download.pytorch.org/whl/cpu" in runs[torch_index]
    (wheel_install,) = [i for i, run in enumerate(runs) if "pip install /wheels/" in run]
    assert torch_index < wheel_install


def test_the_container_builds_the_wheel_from_every_package_and_runs_unprivileged():
    instructions = containerfile_instructions()
    bases = [args.split()[0] for name, args in instructions if name == "FROM"]
    assert set(bases) == {"python:3.11-slim"}
    copied = {source for name, args in instructions if name == "COPY" and "--from" not in args
              for source in args.split()[:-1]}  # fmt: skip
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {name.rstrip("*") for name in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"pyproject.toml", pyproject["project"]["readme"]} <= copied
    (user,) = [args for name, args in instructions if name == "USER"]
    assert user.split(":")[0] not in {"root", "0"}
    assert ("VOLUME", f'["{STATE_DIR}"]') in instructions
    assert ("EXPOSE", str(DEFAULT_MLLP_PORT)) in instructions


# --- Kubernetes --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """Every document in deploy/kubernetes, by (kind, name)."""
    documents = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            key = (document["kind"], document["metadata"]["name"])
            assert key not in documents, f"{key} defined twice"
            documents[key] = document
    return documents


def cronjob_pod(manifests) -> dict[str, Any]:
    return manifests["CronJob", "ecg-agent"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def mounted(pod: dict[str, Any]) -> dict[PurePosixPath, dict[str, Any]]:
    """Mount path -> the volume mounted there."""
    (container,) = pod["containers"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    return {PurePosixPath(m["mountPath"]): volumes[m["name"]] for m in container["volumeMounts"]}


def write_secret_volume(folder: Path, data: dict[str, str]) -> None:
    """Lay the Secret out as the kubelet does: each key a symlink into ..data, itself a symlink to a payload."""
    payload = folder / "..2026_01_01_02_00_00.000000001"
    payload.mkdir(parents=True)
    for key, value in data.items():
        (payload / key).write_text(value)
    (folder / "..data").symlink_to(payload.name)
    for key in data:
        (folder / key).symlink_to(Path("..data") / key)


@pytest.fixture
def cluster_settings(manifests, tmp_path) -> AgentSettings:
    """The settings as the CronJob's pod loads them: agent.toml from the ConfigMap, --secrets-dir the Secret."""
    config = tmp_path / "agent.toml"
    config.write_text(manifests["ConfigMap", "ecg-agent-config"]["data"]["agent.toml"])
    secrets = tmp_path / "secrets"
    write_secret_volume(secrets, manifests["Secret", "ecg-agent-secrets"]["stringData"])
    return load_settings(config, secrets_dir=secrets)


def test_the_cronjob_runs_a_valid_run_once_command_line_with_the_mounted_config_and_secrets(manifests):
    pod = cronjob_pod(manifests)
    (container,) = pod["containers"]
    command = container["command"]
    assert command[0] == "ecg-agent"
    args = _parser().parse_args(command[1:])
    assert (args.command, args.no_progress, args.since) == ("run-once", True, None)
    mounts = mounted(pod)
    config_volume = mounts[PurePosixPath(args.config).parent]
    assert config_volume["configMap"]["name"] == "ecg-agent-config"
    assert args.config.name in manifests["ConfigMap", "ecg-agent-config"]["data"]
    assert mounts[PurePosixPath(args.secrets_dir)]["secret"]["secretName"] == "ecg-agent-secrets"


def test_the_cronjob_runs_nightly_one_at_a_time_on_the_configured_schedule(manifests, cluster_settings):
    from agent.service import EXIT_LOCKED, EXIT_TOO_MANY_FAILURES, RUN_LOCK_LEASE_S

    cronjob = manifests["CronJob", "ecg-agent"]["spec"]
    assert cronjob["schedule"] == cluster_settings.schedule.cron == DEFAULT_CRON
    assert cronjob["timeZone"] == cluster_settings.schedule.timezone
    assert cronjob["startingDeadlineSeconds"] == cluster_settings.schedule.misfire_grace_time_s
    assert cronjob["concurrencyPolicy"] == "Forbid"
    job = cronjob["jobTemplate"]["spec"]
    assert isinstance(job["backoffLimit"], int)
    assert job["activeDeadlineSeconds"] < RUN_LOCK_LEASE_S
    (fail_at_once,) = [rule for rule in job["podFailurePolicy"]["rules"] if rule["action"] == "FailJob"]
    assert set(fail_at_once["onExitCodes"]["values"]) == {EXIT_TOO_MANY_FAILURES, EXIT_LOCKED}
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_the_configmap_settings_take_a_postgresql_url_from_the_secret_and_keep_models_on_the_volume(
    manifests, cluster_settings
):
    assert "database_url" not in tomllib.loads(manifests["ConfigMap", "ecg-agent-config"]["data"]["agent.toml"])
    url = manifests["Secret", "ecg-agent-secrets"]["stringData"]["ECG_AGENT_DATABASE_URL"]
    assert cluster_settings.database_url.get_secret_value() == url
    assert url.startswith("postgresql+psycopg://")
    registry = PurePosixPath(cluster_settings.registry_dir)
    (claim_mount,) = [
        path for path, volume in mounted(cronjob_pod(manifests)).items() if "persistentVolumeClaim" in volume
    ]
    assert registry.is_relative_to(claim_mount)
    claim = mounted(cronjob_pod(manifests))[claim_mount]["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in manifests


def files_named(settings: BaseModel, prefix: str = "") -> dict[str, PurePosixPath]:
    """Every ``*_file`` setting that is set, by dotted name."""
    found = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, BaseModel):
            found |= files_named(value, f"{prefix}{name}.")
        elif name.endswith("_file") and value is not None:
            found[f"{prefix}{name}"] = PurePosixPath(value)
    return found


def test_every_file_the_cluster_settings_name_is_mounted_and_every_secret_comes_from_the_secret(
    manifests, cluster_settings
):
    named = files_named(cluster_settings)
    assert "sources.fhir.server.auth.private_key_file" in named
    mounts = mounted(cronjob_pod(manifests))
    for setting, path in named.items():
        volume = mounts.get(path.parent)
        assert volume is not None, f"{setting} = {path}: nothing is mounted at {path.parent}"
        if setting.rsplit(".", 1)[-1] in SECRET_FILE_SETTINGS:
            assert "secret" in volume, f"{setting} = {path} is a secret but is not mounted from a Secret"
        if "secret" in volume:
            provided = manifests["Secret", volume["secret"]["secretName"]]["stringData"]
        else:
            provided = manifests["ConfigMap", volume["configMap"]["name"]]["data"]
        assert path.name in provided, f"{setting} = {path}: the volume has no key {path.name}"


def test_the_pod_runs_as_non_root_on_a_read_only_root_with_a_writable_tmp_and_bounded_resources(manifests):
    pod = cronjob_pod(manifests)
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert "emptyDir" in mounted(pod)[PurePosixPath("/tmp")]
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert "memory" in container["resources"]["limits"]


def test_the_admin_pod_mounts_what_the_cronjob_mounts_so_registered_models_are_found_at_night(manifests):
    nightly, admin = cronjob_pod(manifests), manifests["Pod", "ecg-agent-admin"]["spec"]

    def without_size(volume: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in volume.items() if key != "emptyDir"}

    assert {path: without_size(v) for path, v in mounted(admin).items()} == {
        path: without_size(v) for path, v in mounted(nightly).items()
    }
    assert admin["containers"][0]["image"] == nightly["containers"][0]["image"]
    assert admin["securityContext"] == nightly["securityContext"]

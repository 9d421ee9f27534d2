"""ecg-agent explains itself, rolls models out through the registry, and exits 1 naming what went wrong."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import wfdb

from agent.cli import main
from integrations.ecg import MIMIC_FILE_LEAD_ORDER
from integrations.store import EcgStudy, ModelState, PredictionSet, TargetScores

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "agent.example.toml"


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f'database_url = "sqlite:///{tmp_path / "agent.db"}"\nregistry_dir = "{tmp_path / "models"}"\n')
    return path


def _agent(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def test_help_lists_every_command():
    result = subprocess.run([sys.executable, "-m", "agent.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("version", "config", "db", "model"):
        assert command in result.stdout


def test_config_check_prints_the_example_with_secrets_masked(capsys):
    assert main(["--config", str(EXAMPLE), "config", "check"]) == 0
    out = capsys.readouterr().out
    assert '"database_url": "**********"' in out and "fhir.hospital.local" in out


def test_a_bad_config_exits_1_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[scoring]\nbatch_size = 0\n")
    assert main(["--config", str(bad), "config", "check"]) == 1
    assert "bad.toml" in capsys.readouterr().err


def test_register_promote_and_history_through_the_cli(config, artifact_factory, capsys):
    assert _agent(config, "db", "upgrade") == 0
    assert _agent(config, "model", "--actor", "dr-ops", "register", str(artifact_factory("1.0.0"))) == 0
    assert _agent(config, "model", "--actor", "dr-ops", "promote", "1.0.0", "--reason", "go live") == 0
    assert _agent(config, "model", "list") == 0
    assert _agent(config, "model", "history") == 0
    out = capsys.readouterr().out
    assert "promoted 1.0.0" in out and "now active" in out
    assert "dr-ops" in out and "registered → active: go live" in out
    assert _agent(config, "model", "verify") == 0


def test_promoting_an_unknown_version_exits_1_with_the_reason(config, capsys):
    assert _agent(config, "model", "promote", "9.9.9", "--reason", "x") == 1
    assert "no model version '9.9.9' is registered" in capsys.readouterr().err


def test_a_mutating_command_without_a_reason_is_a_usage_error(config):
    with pytest.raises(SystemExit) as usage:
        _agent(config, "model", "promote", "1.0.0")
    assert usage.value.code == 2


def test_report_draws_a_wfdb_study_with_the_active_models_findings_as_a_one_page_pdf(tmp_path, store, capsys):
    folder = tmp_path / "wfdb"
    folder.mkdir()
    signal_mv = np.random.default_rng(2).normal(0.0, 0.3, size=(5000, 12))
    wfdb.wrsamp("ref", fs=500, units=["mV"] * 12, sig_name=list(MIMIC_FILE_LEAD_ORDER), p_signal=signal_mv,
                fmt=["16"] * 12, adc_gain=[200.0] * 12, baseline=[0] * 12, write_dir=str(folder))  # fmt: skip
    config = tmp_path / "report.toml"
    config.write_text(f'database_url = "sqlite:///{tmp_path / "agent.db"}"\n[sources.wfdb]\npath = "{folder}"\n')
    manifest = {"diagnoses": [{"code": "I48", "display": "Atrial fibrillation and flutter"}], "lab_targets": []}
    store.register_model_version("2.0.0", "0" * 64, "/models/2.0.0", manifest, actor="test")
    store.set_model_state("2.0.0", ModelState.ACTIVE, actor="test", reason="test")
    study = store.upsert_study(EcgStudy("wfdb", "ref", "1", 500.0, MIMIC_FILE_LEAD_ORDER))
    no_labs = TargetScores((), (), ())
    store.put_prediction_sets([PredictionSet(study.id, "2.0.0", TargetScores(("I48",), (0.93,), (True,)), no_labs)])
    out = tmp_path / "out" / "ref.pdf"
    assert _agent(config, "report", str(study.id), "--pdf", str(out), "--paper", "letter") == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert len(re.findall(rb"/Type\s*/Page\b", out.read_bytes())) == 1


@pytest.mark.parametrize("output", [["--png", "a.pdf"], ["--pdf", "a.png"], ["--png", "a.png", "--pdf", "a.pdf"], []])
def test_report_writes_exactly_one_png_or_pdf_named_as_such(config, output):
    with pytest.raises(SystemExit) as usage:
        _agent(config, "report", "1", *output)
    assert usage.value.code == 2


def test_model_show_prints_the_release_table(config, artifact_factory, capsys):
    assert _agent(config, "model", "register", str(artifact_factory("2.0.0", charted=frozenset({"I48"})))) == 0
    capsys.readouterr()
    assert _agent(config, "model", "show", "2.0.0") == 0
    out = capsys.readouterr().out
    assert "release rule: chart when the validation AUROC's 95% CI low >= 0.80 and PPV >= 0.30" in out
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith(("dia ", "lab "))}
    assert lines["I48"].split()[-1] == "charted" and "Atrial fibrillation and flutter" in lines["I48"]
    assert "0.920 [0.860, 0.970]" in lines["I48"] and " 0.420 " in lines["I48"]
    assert lines["E875"].split()[-1] == "stored" and "Hyperkalemia" in lines["E875"]
    assert "Hemoglobin low" in lines["hemoglobin_low"]
    assert "1 of 4 labels charted" in out
    assert _agent(config, "model", "show", "2.0.0", "--json") == 0
    assert '"diagnoses": 2' in capsys.readouterr().out


def test_promote_says_which_labels_it_would_newly_chart(config, artifact_factory, capsys):
    for version, charted in (("1.0.0", {"I48"}), ("1.1.0", {"I48", "hemoglobin_low"})):
        assert _agent(config, "model", "register", str(artifact_factory(version, charted=frozenset(charted)))) == 0
    assert _agent(config, "model", "promote", "1.0.0", "--reason", "go live") == 0
    assert _agent(config, "model", "promote", "1.1.0", "--reason", "upgrade") == 0
    out = capsys.readouterr().out
    assert "note: 1.1.0 charts 1 label(s) more than active 1.0.0: hemoglobin_low" in out
    assert _agent(config, "model", "history", "1.1.0") == 0
    assert "upgrade [charts 1 label(s) more than active 1.0.0: hemoglobin_low]" in capsys.readouterr().out


def test_shadow_report_compares_the_release_tables_and_asks_for_review_of_a_newly_charted_label(
    config, artifact_factory, capsys
):
    for version, charted in (("1.0.0", {"I48", "E875"}), ("1.1.0", {"I48", "potassium_high"})):
        assert _agent(config, "model", "register", str(artifact_factory(version, charted=frozenset(charted)))) == 0
    assert _agent(config, "model", "promote", "1.0.0", "--reason", "go live") == 0
    assert _agent(config, "model", "shadow", "1.1.0", "--reason", "compare") == 0
    capsys.readouterr()
    assert _agent(config, "model", "shadow-report") == 1
    out = capsys.readouterr().out
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith(("dia ", "lab "))}
    assert lines["I48"].endswith("charted -> charted")
    assert lines["E875"].endswith("charted -> stored  <- no longer charted")
    assert lines["potassium_high"].endswith("stored -> charted  <- newly charted")
    assert "review: the shadow would chart 1 label(s) the active version does not: potassium_high" in out

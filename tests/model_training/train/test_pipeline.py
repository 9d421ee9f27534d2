"""``ecg-train run`` end to end on a tiny hospital: metrics, report, artifact; resume; evaluate and export alone."""

import json
import shutil

import pytest

from model_training.artifact import load_artifact
from model_training.calibration import CALIBRATION_FILE, METHOD
from model_training.cli import main
from model_training.config import CONFIG_DIR, load_config, save_config
from model_training.release import ReleaseTable
from model_training.simulator.simulate import SIMULATOR_VERSION
from model_training.train import loop
from model_training.train.pipeline import CHECKPOINT_DIR, model_version

TINY = str(CONFIG_DIR / "tiny.yaml")
STAGES = ("pretrain", "labs", "diagnosis", "ecg_only", "multimodal")


@pytest.fixture(scope="module")
def finished_run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    args = ["run", "--config", TINY, "--data", str(tiny_dataset), "--out", str(out)]
    assert main([*args, "--no-progress"]) == 0
    return out


@pytest.mark.slow
def test_run_writes_metrics_report_checkpoints_and_the_artifact(finished_run):
    metrics = json.loads((finished_run / "metrics.json").read_text())
    dx = metrics["diagnosis"]
    assert set(dx["macro_auroc"]) == {"ecg_only", "ours", "multimodal"}
    assert {"value", "ci_low", "ci_high"} <= set(dx["delta_ours_minus_ecg_only"])
    assert "gap_closed" in dx and "ours" in metrics["labs"]["macro_auroc"]
    assert (finished_run / "report.md").exists()
    assert sorted(p.stem for p in (finished_run / CHECKPOINT_DIR).glob("*.pt")) == sorted(STAGES)
    assert (finished_run / "model" / "model.ts").exists() and (finished_run / "model" / "manifest.json").exists()


@pytest.mark.slow
def test_the_exported_model_loads_and_scores(finished_run):
    import torch

    artifact = load_artifact(finished_run / "model")
    dx_prob, lab_prob, _ = artifact.module(torch.zeros(2, 12, 1000))
    assert dx_prob.shape[1] == len(artifact.manifest.diagnoses)
    assert lab_prob.shape[1] == len(artifact.manifest.lab_targets)
    assert artifact.manifest.simulator_version == SIMULATOR_VERSION, "trained on the simulated hospital"


@pytest.mark.slow
def test_the_artifact_is_calibrated_on_validation_and_carries_the_release_table(finished_run):
    metrics = json.loads((finished_run / "metrics.json").read_text())
    manifest = load_artifact(finished_run / "model").manifest
    table = ReleaseTable.from_metrics(metrics)
    assert (finished_run / CALIBRATION_FILE).exists() and manifest.calibration == METHOD
    assert manifest.release_rule == table.rule and (table.rule.min_auroc_ci_low, table.rule.min_ppv) == (0.8, 0.3)
    # a tiny validation fold has fewer than 10 positives of any label: nothing it decides reaches the chart
    assert not any(entry.charted for entry in (*table.diagnosis.values(), *table.labs.values()))
    assert {d.code: d.release for d in manifest.diagnoses} == table.diagnosis
    assert {t.name: t.release for t in manifest.lab_targets} == table.labs
    for kind in ("diagnosis", "labs"):  # fit on validation: it cannot be worse there than no map (the identity)
        ece = metrics["calibration"][kind]["ece"]["val"]
        assert ece["after"] <= ece["before"], kind
    report = (finished_run / "report.md").read_text()
    assert "## Calibration" in report and "## What reaches the chart" in report


@pytest.mark.slow
def test_the_same_weights_released_under_another_rule_get_another_version(finished_run):
    release = json.loads((finished_run / "metrics.json").read_text())["release"]
    version = model_version(finished_run / CHECKPOINT_DIR, release)
    assert version == load_artifact(finished_run / "model").manifest.model_version
    stricter = {**release, "rule": {**release["rule"], "min_ppv": 0.5}}
    assert model_version(finished_run / CHECKPOINT_DIR, stricter) != version


@pytest.mark.slow
def test_resume_skips_every_finished_stage(finished_run, tiny_dataset, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    shutil.copytree(finished_run, out)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished stage was trained again")

    monkeypatch.setattr(loop, "fit", no_training)
    monkeypatch.setattr("model_training.train.stages.fit", no_training)
    args = ["run", "--config", TINY, "--data", str(tiny_dataset), "--out", str(out)]
    assert main([*args, "--resume", "--no-progress"]) == 0


@pytest.mark.slow
def test_resume_retrains_only_missing_stages(finished_run, tiny_dataset, tmp_path, monkeypatch):
    out = tmp_path / "partial"
    shutil.copytree(finished_run, out)
    (out / CHECKPOINT_DIR / "multimodal.pt").unlink()
    trained = []
    real_fit = loop.fit

    def recording_fit(task, groups, data, settings, ctx, validate=None, checkpoint=None):
        trained.append(settings.desc)
        return real_fit(task, groups, data, settings, ctx, validate, checkpoint)

    monkeypatch.setattr("model_training.train.stages.fit", recording_fit)
    args = ["run", "--config", TINY, "--data", str(tiny_dataset), "--out", str(out)]
    assert main([*args, "--resume", "--no-progress"]) == 0
    assert trained == ["multimodal"]


@pytest.mark.slow
def test_resume_with_a_changed_stage_config_is_refused(finished_run, tmp_path, tiny_dataset, capsys):
    out = tmp_path / "changed"
    shutil.copytree(finished_run, out)
    config_path = tmp_path / "changed.yaml"
    config = load_config(out / "config.yaml", {"pretrain.loss": "vicreg"})
    save_config(config, config_path)
    assert main(["run", "--config", str(config_path), "--data", str(tiny_dataset), "--out", str(out), "--resume",
                 "--no-progress"]) == 1  # fmt: skip
    assert "pretrain.pt: trained with a different configuration" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_and_export_run_on_their_own(finished_run, tmp_path, capsys):
    out = tmp_path / "again"
    shutil.copytree(finished_run, out)
    (out / "metrics.json").unlink()
    shutil.rmtree(out / "model")
    assert main(["evaluate", "--run", str(out)]) == 0
    assert "diagnosis macro AUROC ours" in capsys.readouterr().out
    assert main(["export", "--run", str(out)]) == 0
    assert (out / "model" / "model.ts").exists()


def test_evaluate_without_a_run_exits_1_naming_the_folder(tmp_path, capsys):
    assert main(["evaluate", "--run", str(tmp_path)]) == 1
    assert "run.json: not a run folder" in capsys.readouterr().err


def test_export_without_metrics_exits_1(tmp_path, capsys):
    assert main(["export", "--run", str(tmp_path)]) == 1
    assert "metrics.json: not found" in capsys.readouterr().err

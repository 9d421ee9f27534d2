"""Export: model.ts + manifest.json, consistent, atomic, with the labels' codes and thresholds."""

import hashlib
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from integrations.ecg import PreprocessConfig
from model_training.artifact import ICD10CM_SYSTEM, LabAssociation, Manifest, load_artifact
from model_training.calibration import METHOD, LabelCalibration, PlattMap
from model_training.data.labels import LabTarget
from model_training.evaluate import Estimate, OperatingThresholds
from model_training.export import ExportError, export_artifact, metrics_summary, whole_windows
from model_training.release import OperatingPoint, ReleaseTable, release_entry, release_rule
from model_training.scoring import EcgScoringModule

PREPROCESS = PreprocessConfig()  # 100 Hz, 2.5 s windows: 250 samples
DX_CODES = ("I50", "I48", "E11")
LAB_TARGETS = (LabTarget("potassium", "high", 5.1), LabTarget("hemoglobin", "low", 13.7))
METRICS = {
    "diagnosis": {
        "macro_auroc": {name: {"value": v, "ci_low": v - 0.02, "ci_high": v + 0.02}
                        for name, v in (("ecg_only", 0.77), ("ours", 0.80), ("multimodal", 0.83))},
        "delta_ours_minus_ecg_only": {"value": 0.03, "ci_low": 0.01, "ci_high": 0.05},
        "gap_closed": {"value": 0.5, "ci_low": None, "ci_high": None, "replicates_dropped": 1000},
    },
    "labs": {"macro_auroc": {"ours": {"value": 0.7, "ci_low": 0.68, "ci_high": 0.72}}},
}  # fmt: skip
THRESHOLDS = OperatingThresholds("max_f1_on_validation", {"I50": 0.3, "I48": 0.4, "E11": 0.5},
                                 {"potassium_high": 0.2, "hemoglobin_low": 0.6})  # fmt: skip
RULE = release_rule(min_auroc_ci_low=0.8, min_ppv=0.3, min_positives=10, n_bootstrap=20, seed=0)
STRONG = release_entry(Estimate(0.93, 0.88, 0.97), OperatingPoint(0.7, 0.9, 0.45, 0.1, 12, 120), RULE)
WEAK = release_entry(Estimate(0.7, 0.6, 0.8), OperatingPoint(0.5, 0.7, 0.12, 0.1, 12, 120), RULE)
RELEASE = ReleaseTable(RULE, {"I50": STRONG, "I48": WEAK, "E11": WEAK},
                       {"potassium_high": STRONG, "hemoglobin_low": WEAK})  # fmt: skip
CALIBRATION = LabelCalibration(
    {"I50": PlattMap(0.5, -1.0), "I48": PlattMap(2.0, 0.3), "E11": PlattMap()},
    {"potassium_high": PlattMap(1.5, -2.0), "hemoglobin_low": PlattMap(0.8, 0.5)},
)


def tiny_scoring(n_dx: int = 3, n_lab: int = 2, window_samples: int = 250) -> EcgScoringModule:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv1d(12, 8, 7, stride=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten())
    return EcgScoringModule(encoder, nn.Linear(8, n_dx), nn.Linear(8, n_lab), window_samples=window_samples)


def export_tiny(out_dir, module=None, **overrides):
    arguments = dict(
        out_dir=out_dir, model_name="ecg-clinical", model_version="0.1.0", dx_labels=DX_CODES,
        lab_targets=LAB_TARGETS, thresholds=THRESHOLDS, release=RELEASE, preprocess=PREPROCESS, metrics=METRICS,
        data_fingerprint="f" * 64, example_input=torch.randn(2, 12, 1000),
        explanations={"I50": (LabAssociation("potassium_high", 2.5, 12),)},
    )  # fmt: skip
    return export_artifact(module or tiny_scoring(), **(arguments | overrides))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_tiny(tmp_path_factory.mktemp("export"))


def test_export_writes_model_and_manifest_and_nothing_else(exported):
    assert exported.name == "model"
    assert sorted(p.name for p in exported.iterdir()) == ["manifest.json", "model.ts"]  # no temporary files left
    assert {p.stat().st_mode & 0o777 for p in exported.iterdir()} == {0o644}  # readable by the agent's user


def test_manifest_sha256_is_that_of_model_ts(exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["model_sha256"] == hashlib.sha256((exported / "model.ts").read_bytes()).hexdigest()


def test_the_archive_embeds_the_manifest_without_its_own_hash(exported):
    extra = {"manifest.json": ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.jit.load(str(exported / "model.ts"), _extra_files=extra)
    embedded = Manifest.from_json(extra["manifest.json"])
    on_disk = Manifest.from_json((exported / "manifest.json").read_text())
    assert embedded.model_sha256 is None
    assert embedded == on_disk.without_sha256()


def test_manifest_carries_codes_thresholds_contract_and_provenance(exported):
    manifest = Manifest.from_json((exported / "manifest.json").read_text())
    assert [d.code for d in manifest.diagnoses] == list(DX_CODES)
    assert {d.system for d in manifest.diagnoses} == {ICD10CM_SYSTEM}
    assert manifest.diagnoses[0].threshold == 0.3
    potassium, hemoglobin = manifest.lab_targets
    assert (potassium.name, potassium.loinc, potassium.direction, potassium.reference_bound) == (
        "potassium_high", "2823-3", "high", 5.1)  # fmt: skip
    assert (hemoglobin.loinc, hemoglobin.threshold, hemoglobin.unit) == ("718-7", 0.6, "g/dL")
    assert manifest.input.leads == PREPROCESS.lead_order
    assert (manifest.input.fs_hz, manifest.input.window_samples, manifest.input.units) == (100.0, 250, "mV")
    assert manifest.input.min_duration_s == 2.5
    assert json.loads((exported / "manifest.json").read_text())["input"]["min_duration_s"] == 2.5
    assert manifest.explanations == {"I50": (LabAssociation("potassium_high", 2.5, 12),)}
    assert manifest.metrics["diagnosis.macro_auroc.ours.value"] == 0.80
    assert manifest.data_fingerprint == "f" * 64 and manifest.embedding_dim == 8
    assert (manifest.schema_version, manifest.contract_version) == (2, 1)


def test_metrics_summary_flattens_the_headline_and_leaves_out_undefined_values():
    summary = metrics_summary(METRICS)
    assert summary["diagnosis.delta_ours_minus_ecg_only.ci_low"] == 0.01
    assert summary["labs.macro_auroc.ours.value"] == 0.7
    assert "diagnosis.gap_closed.ci_low" not in summary and summary["diagnosis.gap_closed.value"] == 0.5


def test_the_reloaded_artifact_scores_like_the_eager_module(exported, tmp_path):
    module = tiny_scoring().eval()
    ecg = torch.randn(3, 12, 777)
    artifact = load_artifact(exported)
    with torch.inference_mode():
        for eager, loaded in zip(module(ecg), artifact.module(ecg), strict=True):
            assert (eager - loaded).abs().max().item() <= 1e-5


def test_re_export_replaces_the_artifact_in_place(tmp_path):
    first = export_tiny(tmp_path)
    sha_before = load_artifact(first).manifest.model_sha256
    second = export_tiny(tmp_path, module=tiny_scoring(n_dx=3, n_lab=2), model_version="0.2.0")
    assert load_artifact(second).manifest.model_version == "0.2.0"
    assert load_artifact(second).manifest.model_sha256 != sha_before  # created_at and version differ


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dx_labels": ("I50", "I48", "I10")}, "no operating threshold for diagnoses"),
        ({"lab_targets": (LabTarget("potassium", "high", 5.1), LabTarget("unobtainium", "low", 1.0))}, "catalogue"),
        ({"preprocess": PreprocessConfig(window_s=5.0)}, "module windows are 250 samples"),
        ({"dx_labels": ("I50", "I48")}, "sizes"),
        ({"explanations": {"I50": (LabAssociation("sodium_low", 2.0, 9),)}}, "unknown diagnoses"),
        ({"release": ReleaseTable(RULE, {"I50": STRONG, "I48": WEAK}, RELEASE.labs)}, "no entry for 'E11'"),
        ({"calibration": LabelCalibration({"I50": PlattMap()}, CALIBRATION.labs)}, "no calibration map"),
    ],
)
def test_inconsistent_exports_are_refused(tmp_path, overrides, message):
    with pytest.raises(ExportError, match=message):
        export_tiny(tmp_path, **overrides)
    assert not (tmp_path / "model" / "manifest.json").exists()


def test_torch_export_program_matches_eager_calibration_included(tmp_path):
    model_dir = export_tiny(tmp_path, extra_formats=("pt2",), calibration=CALIBRATION)
    manifest = load_artifact(model_dir).manifest
    assert manifest.extra_files["model.pt2"] == hashlib.sha256((model_dir / "model.pt2").read_bytes()).hexdigest()
    program = torch.export.load(str(model_dir / "model.pt2")).module()
    module = tiny_scoring().with_calibration(*CALIBRATION.modules()).eval()
    for n_windows, batch in ((2, 1), (3, 4)):  # torch.export specialises one window away (see export.py)
        ecg = torch.randn(batch, 12, 250 * n_windows)
        for eager, exported in zip(module(ecg), program(ecg), strict=True):
            assert (eager - exported).abs().max().item() <= 1e-5


def test_a_format_not_exported_again_is_removed_not_left_stale(tmp_path):
    export_tiny(tmp_path, extra_formats=("pt2",))
    model_dir = export_tiny(tmp_path)
    assert not (model_dir / "model.pt2").exists() and load_artifact(model_dir).manifest.extra_files == {}


def test_onnx_model_matches_eager_in_onnx_runtime(tmp_path):
    pytest.importorskip("onnxscript", reason="ONNX export needs the [onnx] extra")
    onnxruntime = pytest.importorskip("onnxruntime", reason="ONNX Runtime is in the [onnx] extra")
    model_dir = export_tiny(tmp_path, extra_formats=("onnx",))
    session = onnxruntime.InferenceSession(str(model_dir / "model.onnx"))
    module = tiny_scoring().eval()
    for n_windows, batch in ((1, 1), (4, 3)):
        ecg = torch.randn(batch, 12, 250 * n_windows + 60)
        ecg[0, 3, 20:40] = float("nan")
        cropped = whole_windows(ecg, 250)
        outputs = session.run(None, {"ecg_mv": cropped.numpy()})
        for eager, onnx_output in zip(module(ecg), outputs, strict=True):
            assert (eager - torch.from_numpy(onnx_output)).abs().max().item() <= 1e-5


def test_names_and_parents_come_from_the_icd10cm_table_and_labs_read_as_clinicians_write_them(tmp_path):
    model_dir = export_tiny(tmp_path, dx_labels=("E039", "I2101", "K219"),
                            thresholds=OperatingThresholds("t", dict.fromkeys(("E039", "I2101", "K219"), 0.5),
                                                           THRESHOLDS.labs),
                            release=ReleaseTable(RULE, dict.fromkeys(("E039", "I2101", "K219"), WEAK), RELEASE.labs),
                            explanations={})  # fmt: skip
    manifest = load_artifact(model_dir).manifest
    named = {d.code: (d.display, d.parents) for d in manifest.diagnoses}
    assert named == {
        "E039": ("Hypothyroidism, unspecified", ("E03",)),
        "I2101": ("ST elevation (STEMI) myocardial infarction involving left main coronary artery", ("I210", "I21")),
        "K219": ("Gastro-esophageal reflux disease without esophagitis", ("K21",)),
    }
    assert [t.display for t in manifest.lab_targets] == ["Potassium high", "Hemoglobin low"]


def test_the_manifest_carries_the_release_table_and_rule(exported):
    manifest = load_artifact(exported).manifest
    assert [d.charted for d in manifest.diagnoses] == [True, False, False]
    assert manifest.diagnoses[0].release == STRONG and manifest.lab_targets[1].release == WEAK
    assert manifest.release_rule == RULE and manifest.calibration == "none"


def test_the_calibration_goes_inside_the_exported_module(tmp_path):
    model_dir = export_tiny(tmp_path, calibration=CALIBRATION)
    artifact = load_artifact(model_dir)
    assert artifact.manifest.calibration == METHOD
    ecg = torch.randn(3, 12, 777)
    with torch.inference_mode():
        raw_dx, raw_lab, _ = tiny_scoring().eval()(ecg)
        dx_prob, lab_prob, _ = artifact.module(ecg)
    assert np.abs(dx_prob.numpy() - CALIBRATION.apply_diagnosis(raw_dx.numpy())).max() <= 1e-5
    assert np.abs(lab_prob.numpy() - CALIBRATION.apply_labs(raw_lab.numpy())).max() <= 1e-5
    assert np.abs(dx_prob.numpy() - raw_dx.numpy()).max() > 1e-2  # the maps are not the identity


def test_export_reads_nothing_of_the_simulator():
    code = (
        "import sys, model_training.export\n"
        "print(sorted(m for m in sys.modules if 'cohort_report' in m or 'physiology' in m or 'simulat' in m))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"

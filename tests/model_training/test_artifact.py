"""The artifact loader: stands alone, verifies before it loads, and refuses every kind of mismatch."""

import dataclasses
import io
import json
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

from integrations.ecg import PreprocessConfig
from model_training.artifact import (
    ArtifactError,
    ArtifactNotFoundError,
    InputContractError,
    IntegrityError,
    Manifest,
    ManifestError,
    ManifestMismatchError,
    UnsupportedVersionError,
    load_artifact,
    sha256_hex,
)
from model_training.data.labels import LabTarget
from model_training.evaluate import Estimate, OperatingThresholds
from model_training.export import export_artifact
from model_training.release import OperatingPoint, ReleaseTable, release_entry, release_rule
from model_training.scoring import EcgScoringModule

METRICS = {
    "diagnosis": {"macro_auroc": {"ours": {"value": 0.8, "ci_low": 0.78, "ci_high": 0.82}},
                  "delta_ours_minus_ecg_only": {"value": 0.03, "ci_low": 0.01, "ci_high": 0.05},
                  "gap_closed": {"value": 0.5, "ci_low": 0.2, "ci_high": 0.8}},
    "labs": {"macro_auroc": {}},
}  # fmt: skip


def tiny_scoring() -> EcgScoringModule:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv1d(12, 8, 7, stride=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten())
    return EcgScoringModule(encoder, nn.Linear(8, 2), nn.Linear(8, 1), window_samples=250).eval()


RULE = release_rule(min_auroc_ci_low=0.8, min_ppv=0.3, min_positives=10, n_bootstrap=20, seed=0)
STRONG = release_entry(Estimate(0.93, 0.88, 0.97), OperatingPoint(0.7, 0.9, 0.45, 0.1, 12, 120), RULE)
WEAK = release_entry(Estimate(0.7, 0.6, 0.8), OperatingPoint(0.5, 0.7, 0.12, 0.1, 12, 120), RULE)
RELEASE = ReleaseTable(RULE, {"I50": STRONG, "I48": WEAK}, {"potassium_high": STRONG})


@pytest.fixture
def artifact_dir(tmp_path):
    return export_artifact(
        tiny_scoring(), out_dir=tmp_path, model_name="ecg-clinical", model_version="1.0.0", dx_labels=("I50", "I48"),
        lab_targets=(LabTarget("potassium", "high", 5.1),),
        thresholds=OperatingThresholds("max_f1_on_validation", {"I50": 0.3, "I48": 0.4}, {"potassium_high": 0.2}),
        release=RELEASE, preprocess=PreprocessConfig(), metrics=METRICS, data_fingerprint="ab" * 32,
        example_input=torch.randn(2, 12, 1000),
    )  # fmt: skip


def rewrite_manifest(artifact_dir, **changes) -> None:
    path = artifact_dir / "manifest.json"
    data = json.loads(path.read_text()) | changes
    path.write_text(json.dumps(data))


def test_loads_a_verified_artifact_and_scores(artifact_dir):
    artifact = load_artifact(artifact_dir)
    assert artifact.manifest.model_version == "1.0.0" and not artifact.module.training
    scores = artifact.score(torch.randn(12, 1000).numpy())  # one study, numpy, no batch axis
    assert scores.dx_prob.shape == (1, 2) and scores.lab_prob.shape == (1, 1) and scores.embedding.shape == (1, 8)
    assert load_artifact(artifact_dir / "model.ts").manifest == artifact.manifest  # the file path works too


def test_loads_and_scores_in_a_fresh_process_like_the_eager_module(artifact_dir):
    ecg = torch.randn(3, 12, 1000)
    buffer = io.BytesIO()
    torch.save(ecg, buffer)
    (artifact_dir.parent / "ecg.pt").write_bytes(buffer.getvalue())
    code = (
        "import json, sys, torch; from pathlib import Path; from model_training.artifact import load_artifact\n"
        "artifact = load_artifact(Path(sys.argv[1]))\n"
        "scores = artifact.score(torch.load(sys.argv[2]))\n"
        "print(json.dumps([scores.dx_prob.tolist(), scores.lab_prob.tolist(), scores.embedding.tolist()]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(artifact_dir), str(artifact_dir.parent / "ecg.pt")],
                            capture_output=True, text=True, check=True)  # fmt: skip
    with torch.inference_mode():
        expected = tiny_scoring()(ecg)
    for fresh, eager in zip(json.loads(result.stdout), expected, strict=True):
        assert (torch.tensor(fresh) - eager).abs().max().item() <= 1e-5


def test_importing_the_loader_imports_nothing_else_of_model_training():
    code = (
        "import sys, model_training.artifact\n"
        "print(sorted(m for m in sys.modules if m == 'model_training' or m.startswith('model_training.')))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'integrations', 'agent', 'sklearn', 'pandas'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    ours, others = result.stdout.splitlines()
    assert ours == "['model_training', 'model_training.artifact']"
    assert others == "[]"


def test_a_tampered_model_is_refused(artifact_dir):
    model = artifact_dir / "model.ts"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        load_artifact(artifact_dir)


@pytest.mark.parametrize("name", ["model.ts", "manifest.json"])
def test_a_missing_file_is_named(artifact_dir, name):
    (artifact_dir / name).unlink()
    with pytest.raises(ArtifactNotFoundError, match=name) as caught:
        load_artifact(artifact_dir)
    assert isinstance(caught.value, FileNotFoundError)


@pytest.mark.parametrize("key", ["schema_version", "contract_version"])
def test_an_unknown_schema_or_contract_version_is_refused(artifact_dir, key):
    rewrite_manifest(artifact_dir, **{key: 99})
    with pytest.raises(UnsupportedVersionError, match=key):
        load_artifact(artifact_dir)


def test_a_malformed_manifest_is_refused(artifact_dir):
    (artifact_dir / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not JSON"):
        load_artifact(artifact_dir)
    rewrite_manifest_text = json.dumps({"schema_version": 2, "contract_version": 1, "model_name": "x"})
    (artifact_dir / "manifest.json").write_text(rewrite_manifest_text)
    with pytest.raises(ManifestError, match="malformed"):
        load_artifact(artifact_dir)


def test_a_manifest_edited_after_export_disagrees_with_the_archive(artifact_dir):
    manifest = json.loads((artifact_dir / "manifest.json").read_text())
    manifest["diagnoses"][0]["threshold"] = 0.01  # e.g. someone "tunes" a threshold by hand
    (artifact_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestMismatchError, match="diagnoses"):
        load_artifact(artifact_dir)


def test_labels_that_do_not_match_the_module_outputs_are_refused(artifact_dir):
    """A consistently re-signed artifact whose manifest lists one diagnosis too few."""
    manifest = Manifest.from_json((artifact_dir / "manifest.json").read_text())
    manifest = dataclasses.replace(manifest, diagnoses=manifest.diagnoses[:1], model_sha256=None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        module = torch.jit.load(str(artifact_dir / "model.ts"))
        buffer = io.BytesIO()
        torch.jit.save(module, buffer, _extra_files={"manifest.json": manifest.to_json()})
    (artifact_dir / "model.ts").write_bytes(buffer.getvalue())
    signed = dataclasses.replace(manifest, model_sha256=sha256_hex(buffer.getvalue()))
    (artifact_dir / "manifest.json").write_text(signed.to_json())
    with pytest.raises(ManifestMismatchError, match="sizes"):
        load_artifact(artifact_dir)


@pytest.mark.parametrize("shape", [(1, 12, 249), (1, 11, 1000), (12,)])
def test_score_refuses_input_outside_the_contract(artifact_dir, shape):
    with pytest.raises(InputContractError):
        load_artifact(artifact_dir).score(torch.zeros(shape))


def test_every_error_is_an_artifact_error():
    for error in (ArtifactNotFoundError, ManifestError, UnsupportedVersionError, IntegrityError,
                  ManifestMismatchError, InputContractError):  # fmt: skip
        assert issubclass(error, ArtifactError)


def test_the_manifest_carries_each_labels_release_entry_and_the_rule(artifact_dir):
    manifest = load_artifact(artifact_dir).manifest
    heart_failure, atrial_fibrillation = manifest.diagnoses
    assert heart_failure.release == STRONG and heart_failure.charted
    assert atrial_fibrillation.release == WEAK and not atrial_fibrillation.charted
    assert manifest.lab_targets[0].charted and manifest.release_rule == RULE
    assert (heart_failure.display, heart_failure.parents) == ("Heart failure", ())


def test_the_manifest_round_trips_through_json(artifact_dir):
    manifest = load_artifact(artifact_dir).manifest
    assert Manifest.from_json(manifest.to_json()) == manifest


def schema_1(manifest: dict) -> dict:
    """The manifest as exported before the release table: no calibration, rule, parents or release entries."""
    old = {k: v for k, v in manifest.items() if k not in {"calibration", "release_rule"}} | {"schema_version": 1}
    old["diagnoses"] = [{k: v for k, v in d.items() if k not in {"parents", "release"}} for d in old["diagnoses"]]
    old["lab_targets"] = [{k: v for k, v in t.items() if k != "release"} for t in old["lab_targets"]]
    return old


def test_a_schema_1_manifest_loads_with_no_release_decision_so_nothing_is_charted(artifact_dir):
    manifest = Manifest.from_json(json.dumps(schema_1(json.loads((artifact_dir / "manifest.json").read_text()))))
    assert manifest.schema_version == 1 and manifest.release_rule is None and manifest.calibration is None
    assert all(label.release is None and not label.charted for label in (*manifest.diagnoses, *manifest.lab_targets))


def test_a_schema_1_manifest_with_release_fields_is_refused(artifact_dir):
    manifest = json.loads((artifact_dir / "manifest.json").read_text())
    with pytest.raises(ManifestError, match="unknown DiagnosisLabel fields"):
        Manifest.from_json(json.dumps(schema_1(manifest) | {"diagnoses": manifest["diagnoses"]}))


@pytest.mark.parametrize("drop", ["release_rule", "diagnoses.release", "diagnoses.parents", "lab_targets.release"])
def test_a_schema_2_manifest_without_its_release_fields_is_refused(artifact_dir, drop):
    manifest = json.loads((artifact_dir / "manifest.json").read_text())
    section, _, key = drop.partition(".")
    if key:
        del manifest[section][0][key]
    else:
        del manifest[section]
    with pytest.raises(ManifestError, match=f"lacks.*{key or section}"):
        Manifest.from_json(json.dumps(manifest))


def test_a_release_entry_whose_charted_is_not_a_boolean_is_refused(artifact_dir):
    manifest = json.loads((artifact_dir / "manifest.json").read_text())
    manifest["diagnoses"][0]["release"]["charted"] = "yes"
    with pytest.raises(ManifestError, match="charted"):
        Manifest.from_json(json.dumps(manifest))

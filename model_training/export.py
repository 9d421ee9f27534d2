"""Export a trained :class:`~model_training.scoring.EcgScoringModule` as the artifact the agent loads.

``OUT/model/model.ts`` is the shipped format (TorchScript) and ``OUT/model/manifest.json``
its manifest (:class:`model_training.artifact.Manifest`; see that module for the
layout and why the copy embedded in model.ts has no sha256). Each file is written
atomically (temporary file, fsync, rename), model.ts first: a crash in between
leaves an old manifest whose sha256 no longer matches, which the loader refuses.

For sites moving off TorchScript, ``extra_formats`` adds ``model.pt2``
(``torch.export``) and ``model.onnx`` (needs the ``[onnx]`` extra); their sha256
values go in ``manifest.extra_files``. Unlike model.ts, those two need ``T`` to be a
whole number of windows (crop with :func:`whole_windows` first): ``torch.export``
cannot express "drop the remainder" for a dynamic length. model.pt2 also needs at
least two windows (torch 2.13 specialises a dynamic size of 1); model.onnx takes one.

Export errors::

    ModelTrainingError
    └── ExportError   the module, labels or thresholds cannot make a consistent artifact
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import torch

from integrations.ecg import PreprocessConfig
from model_training.artifact import (
    EMBEDDED_MANIFEST,
    MANIFEST_FILE,
    MODEL_FILE,
    DiagnosisLabel,
    InputContract,
    LabAssociation,
    LabTargetLabel,
    Manifest,
    ReleaseEntry,
    load_artifact,
    sha256_hex,
)
from model_training.calibration import LabelCalibration
from model_training.data.catalogue import LABS_BY_KEY
from model_training.data.labels import LabTarget
from model_training.errors import ModelTrainingError
from model_training.evaluate import OperatingThresholds
from model_training.names import diagnosis_name, lab_display
from model_training.release import ReleaseTable
from model_training.scoring import EcgScoringModule

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-5  # max |eager - exported| on the example input, for every output
PT2_FILE = "model.pt2"
ONNX_FILE = "model.onnx"
EXTRA_FORMATS: tuple[str, ...] = ("pt2", "onnx")
MAX_BATCH = 4096
MAX_WINDOWS = 4096
PT2_MIN_WINDOWS = 2
ARTIFACT_FILE_MODE = 0o644
OUTPUT_NAMES: tuple[str, ...] = ("dx_prob", "lab_prob", "embedding")
UNCALIBRATED = "none"


class ExportError(ModelTrainingError):
    """The module, its labels and thresholds cannot make a consistent artifact; says why."""


def export_artifact(
    scoring_module: EcgScoringModule,
    *,
    out_dir: Path,
    model_name: str,
    model_version: str,
    dx_labels: Sequence[str],
    lab_targets: Sequence[LabTarget],
    thresholds: OperatingThresholds,
    release: ReleaseTable,
    preprocess: PreprocessConfig,
    metrics: dict,
    data_fingerprint: str,
    example_input: torch.Tensor,
    calibration: LabelCalibration | None = None,
    explanations: Mapping[str, Sequence[LabAssociation]] | None = None,
    extra_formats: Sequence[str] = (),
    simulator_version: str | None = None,
) -> Path:
    """Script, check and write ``out_dir/model/{model.ts, manifest.json}``; return that directory.

    ``scoring_module`` is the uncalibrated model; ``calibration`` its per-label maps, which
    go inside the exported module (so it outputs calibrated probabilities) and must be
    the maps ``thresholds`` and ``release`` were computed after;
    ``dx_labels`` are the ICD-10-CM codes in output order (displays and parents from the
    ICD-10-CM table); ``lab_targets`` the lab targets in output order (LOINC from the catalogue);
    ``thresholds`` the validation operating points of this model; ``release`` its release
    table (every label needs an entry);
    ``metrics`` the dict :func:`model_training.evaluate.evaluate_run` returned (a
    summary goes in the manifest); ``explanations`` the association table from
    :func:`model_training.report.lab_associations`; ``example_input`` a
    ``[B, 12, T]`` batch used for the eager-versus-exported parity check.
    """
    scoring_module = _calibrated(scoring_module, calibration, dx_labels, lab_targets).eval()
    _check_module_matches(scoring_module, preprocess)
    with torch.inference_mode():
        eager_outputs = scoring_module(example_input)
    manifest = Manifest(
        model_name=model_name,
        model_version=model_version,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        diagnoses=_diagnosis_labels(dx_labels, thresholds, release),
        lab_targets=_lab_target_labels(lab_targets, thresholds, release),
        threshold_rule=thresholds.rule,
        explanations=_explanations(explanations or {}, dx_labels, lab_targets),
        input=_input_contract(preprocess),
        embedding_dim=int(eager_outputs[2].shape[-1]),
        metrics=metrics_summary(metrics),
        data_fingerprint=data_fingerprint,
        torch_version=torch.__version__,
        calibration=calibration.method if calibration is not None else UNCALIBRATED,
        release_rule=release.rule,
        simulator_version=simulator_version,
    )
    _check_output_sizes(manifest, eager_outputs)
    scripted = script(scoring_module)
    _check_parity("TorchScript", eager_outputs, _run(scripted, example_input))
    model_dir = out_dir / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    extra_files = _write_extra_formats(scoring_module, extra_formats, example_input, model_dir)
    _write_model_and_manifest(model_dir, scripted, dataclasses.replace(manifest, extra_files=extra_files))
    _check_parity("reloaded TorchScript", eager_outputs, _run(load_artifact(model_dir).module, example_input))
    return model_dir


def _write_model_and_manifest(model_dir: Path, scripted: torch.jit.ScriptModule, manifest: Manifest) -> None:
    """model.ts first, then the manifest that signs it: a crash in between leaves a refused, not a wrong, artifact."""
    model_bytes = _torchscript_bytes(scripted, manifest)
    _write_atomic(model_dir / MODEL_FILE, model_bytes)
    signed = dataclasses.replace(manifest, model_sha256=sha256_hex(model_bytes))
    _write_atomic(model_dir / MANIFEST_FILE, signed.to_json().encode("utf-8"))
    log.info("exported %s %s sha256=%s", manifest.model_name, manifest.model_version, signed.model_sha256)


def script(scoring_module: EcgScoringModule) -> torch.jit.ScriptModule:
    """``torch.jit.script``, with torch's TorchScript deprecation warning silenced (it is our shipped format)."""
    with _quiet_torchscript():
        return torch.jit.script(scoring_module)


@contextmanager
def _quiet_torchscript() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*TorchScript.*deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        yield


def metrics_summary(metrics: dict) -> dict[str, float]:
    """The headline numbers of ``metrics.json`` as flat ``dotted.key → value`` (undefined ones left out)."""
    summary: dict[str, float] = {}
    diagnosis, labs = metrics["diagnosis"], metrics["labs"]
    sections = {f"diagnosis.macro_auroc.{name}": e for name, e in diagnosis["macro_auroc"].items()}
    sections |= {
        "diagnosis.delta_ours_minus_ecg_only": diagnosis["delta_ours_minus_ecg_only"],
        "diagnosis.gap_closed": diagnosis["gap_closed"],
    }
    sections |= {f"labs.macro_auroc.{name}": e for name, e in labs["macro_auroc"].items()}
    for prefix, estimate in sections.items():
        for key in ("value", "ci_low", "ci_high"):
            if estimate.get(key) is not None:
                summary[f"{prefix}.{key}"] = float(estimate[key])
    return summary


# ---------------------------------------------------------------- manifest parts


def _calibrated(
    module: EcgScoringModule,
    calibration: LabelCalibration | None,
    dx_labels: Sequence[str],
    lab_targets: Sequence[LabTarget],
) -> EcgScoringModule:
    if calibration is None:
        return module
    try:
        ordered = calibration.in_order(tuple(dx_labels), tuple(t.name for t in lab_targets))
    except KeyError as exc:
        raise ExportError(str(exc)) from exc
    return module.with_calibration(*ordered.modules())


def _release_entry(entries: Mapping[str, ReleaseEntry], name: str) -> ReleaseEntry:
    if name not in entries:
        raise ExportError(f"the release table has no entry for {name!r}")
    return entries[name]


def _diagnosis_labels(
    codes: Sequence[str], thresholds: OperatingThresholds, release: ReleaseTable
) -> tuple[DiagnosisLabel, ...]:
    missing = [code for code in codes if code not in thresholds.diagnosis]
    if missing:
        raise ExportError(f"no operating threshold for diagnoses {missing}")
    labels = []
    for code in codes:
        name = diagnosis_name(code)
        threshold = float(thresholds.diagnosis[code])
        entry = _release_entry(release.diagnosis, code)
        labels.append(DiagnosisLabel(code, name.display, threshold, parents=name.parents, release=entry))
    return tuple(labels)


def _lab_target_labels(
    targets: Sequence[LabTarget], thresholds: OperatingThresholds, release: ReleaseTable
) -> tuple[LabTargetLabel, ...]:
    labels = []
    for target in targets:
        lab = LABS_BY_KEY.get(target.lab)
        if lab is None:
            raise ExportError(f"lab {target.lab!r} is not in the catalogue, so it has no LOINC code")
        if target.name not in thresholds.labs:
            raise ExportError(f"no operating threshold for lab target {target.name!r}")
        labels.append(
            LabTargetLabel(
                name=target.name,
                lab=target.lab,
                loinc=lab.loinc,
                display=lab_display(target.lab, target.direction),
                direction=target.direction,
                reference_bound=float(target.threshold),
                unit=lab.unit,
                threshold=float(thresholds.labs[target.name]),
                release=_release_entry(release.labs, target.name),
            )
        )
    return tuple(labels)


def _explanations(
    explanations: Mapping[str, Sequence[LabAssociation]], dx_labels: Sequence[str], lab_targets: Sequence[LabTarget]
) -> dict[str, tuple[LabAssociation, ...]]:
    unknown_codes = set(explanations) - set(dx_labels)
    unknown_targets = {a.lab_target for items in explanations.values() for a in items} - {t.name for t in lab_targets}
    if unknown_codes or unknown_targets:
        raise ExportError(
            f"explanations name unknown diagnoses {sorted(unknown_codes)} or labs {sorted(unknown_targets)}"
        )
    return {code: tuple(items) for code, items in explanations.items()}


def _input_contract(preprocess: PreprocessConfig) -> InputContract:
    return InputContract(
        leads=tuple(preprocess.lead_order), fs_hz=float(preprocess.fs_hz), window_s=float(preprocess.window_s),
        window_samples=preprocess.window_samples, clip_mv=float(preprocess.clip_mv),
        min_duration_s=preprocess.window_samples / float(preprocess.fs_hz), units=preprocess.units,
    )  # fmt: skip


# ---------------------------------------------------------------- checks


def _check_module_matches(module: EcgScoringModule, preprocess: PreprocessConfig) -> None:
    if module.window_samples != preprocess.window_samples:
        raise ExportError(
            f"module windows are {module.window_samples} samples, preprocessing says {preprocess.window_samples}"
        )
    if module.clip_mv != preprocess.clip_mv:
        raise ExportError(f"module clips at {module.clip_mv} mV, preprocessing at {preprocess.clip_mv} mV")


def _check_output_sizes(manifest: Manifest, outputs: tuple[torch.Tensor, ...]) -> None:
    expected = (len(manifest.diagnoses), len(manifest.lab_targets))
    actual = (int(outputs[0].shape[-1]), int(outputs[1].shape[-1]))
    if actual != expected:
        raise ExportError(f"module outputs (dx, lab) sizes {actual} but {expected} labels were given")


def _run(module: torch.nn.Module, example_input: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.inference_mode():
        return tuple(module(example_input))


def _check_parity(what: str, expected: tuple[torch.Tensor, ...], actual: tuple[torch.Tensor, ...]) -> None:
    for name, e, a in zip(OUTPUT_NAMES, expected, actual, strict=True):
        diff = float((torch.as_tensor(a) - e).abs().max()) if e.numel() else 0.0
        if not diff <= PARITY_TOLERANCE:
            raise ExportError(f"{what} {name} differs from eager by {diff:.2e} (> {PARITY_TOLERANCE:.0e})")


# ---------------------------------------------------------------- writing


def _torchscript_bytes(scripted: torch.jit.ScriptModule, manifest: Manifest) -> bytes:
    buffer = io.BytesIO()
    embedded = {EMBEDDED_MANIFEST: manifest.without_sha256().to_json()}
    with _quiet_torchscript():
        torch.jit.save(scripted, buffer, _extra_files=embedded)
    return buffer.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as tmp:
            os.fchmod(tmp.fileno(), ARTIFACT_FILE_MODE)  # mkstemp makes 0600; the agent may run as another user
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


# ---------------------------------------------------------------- other formats


def _write_extra_formats(
    module: EcgScoringModule, formats: Sequence[str], example_input: torch.Tensor, model_dir: Path
) -> dict[str, str]:
    """Write the requested non-TorchScript files; return file name → sha256."""
    unknown = set(formats) - set(EXTRA_FORMATS)
    if unknown:
        raise ExportError(f"unknown export formats {sorted(unknown)}; choose from {EXTRA_FORMATS}")
    example = whole_windows(example_input, module.window_samples)
    exporters = {"pt2": (PT2_FILE, export_pt2_bytes), "onnx": (ONNX_FILE, export_onnx_bytes)}
    written = {}
    for file_format, (name, exporter) in exporters.items():
        if file_format not in formats:
            (model_dir / name).unlink(missing_ok=True)  # a stale file from an earlier export would not match
            continue
        data = exporter(module, example)
        _write_atomic(model_dir / name, data)
        written[name] = sha256_hex(data)
    return written


def whole_windows(ecg_mv: torch.Tensor, window_samples: int) -> torch.Tensor:
    """Crop ``[B, 12, T]`` to a whole number of windows (what model.pt2 and model.onnx accept)."""
    n_windows = ecg_mv.shape[-1] // window_samples
    if n_windows == 0:
        raise ExportError(f"the example input has {ecg_mv.shape[-1]} samples, less than one window")
    return ecg_mv[..., : n_windows * window_samples]


def _dynamic_shapes(window_samples: int, min_windows: int) -> dict[str, dict[int, object]]:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    windows = torch.export.Dim("windows", min=min_windows, max=MAX_WINDOWS)
    return {"ecg_mv": {0: batch, 2: window_samples * windows}}


def export_program(module: EcgScoringModule, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` with dynamic batch and window count (2 or more); ``example`` is whole windows."""
    if example.shape[-1] < PT2_MIN_WINDOWS * module.window_samples:
        raise ExportError(f"torch.export needs an example of at least {PT2_MIN_WINDOWS} windows")
    shapes = _dynamic_shapes(module.window_samples, PT2_MIN_WINDOWS)
    return torch.export.export(module.eval(), (example,), dynamic_shapes=shapes)


def export_pt2_bytes(module: EcgScoringModule, example: torch.Tensor) -> bytes:
    program = export_program(module, example)
    _check_parity("torch.export", _run(module, example), _run(program.module(), example))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def export_onnx_bytes(module: EcgScoringModule, example: torch.Tensor) -> bytes:
    """ONNX through the dynamo exporter; needs the ``[onnx]`` extra (onnx, onnxscript)."""
    try:
        import onnxscript  # noqa: F401  the dynamo exporter needs it; fail with a clear message
    except ImportError as exc:
        raise ExportError("ONNX export needs the [onnx] extra: pip install '.[onnx]'") from exc
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # torch 2.13's exporter trips over its own pytree deprecation; nothing a caller can act on.
        warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*", category=FutureWarning)
        path = Path(tmp) / ONNX_FILE
        program = torch.onnx.export(
            module.eval(), (example,), dynamo=True, dynamic_shapes=_dynamic_shapes(module.window_samples, 1),
            input_names=["ecg_mv"], output_names=list(OUTPUT_NAMES), verbose=False,
        )  # fmt: skip
        program.save(str(path))
        return path.read_bytes()

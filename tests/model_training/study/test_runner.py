"""The study runner with the training pipeline replaced by a stand-in: resuming, refusing, sharing checkpoints."""

import dataclasses
import json
import re
from pathlib import Path

import pytest
from torch import nn

from model_training.cli import main
from model_training.config import CONFIG_DIR
from model_training.errors import ConfigError
from model_training.simulator.simulate import SIMULATOR_VERSION
from model_training.study import runner
from model_training.study.grid import Cell, load_grid
from model_training.study.report import VARIANTS_FIGURE_FILE, write_outputs
from model_training.study.runner import CELL_FILE, adopt_checkpoints, ensure_hospital, run_study, study_report
from model_training.train.checkpoints import checkpoint_path, save_stage
from model_training.train.loop import FitResult

TINY_GRID = CONFIG_DIR / "study-tiny.yaml"
STUDY_GRID = CONFIG_DIR / "study.yaml"


class FakePipeline:
    """Stands in for ``run_pipeline``: records each call and writes a metrics.json whose delta grows with the seed."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple[Path, bool]] = []
        self.fail_on = fail_on

    def __call__(self, config, data_dir, out_dir, *, resume=False, device=None):
        self.calls.append((out_dir, resume))
        assert (data_dir / "SIMULATED.json").exists(), "the hospital is simulated before the cell runs"
        if self.fail_on and out_dir.as_posix().endswith(self.fail_on):
            raise RuntimeError("killed")
        delta = 0.01 * (config.seed + 1)
        aurocs = {"ecg_only": 0.70, "ours": 0.70 + delta, "multimodal": 0.80}
        metrics = {
            "diagnosis": {"macro_auroc": {m: {"value": v} for m, v in aurocs.items()}},
            "labs": {"macro_auroc": {"ours": {"value": 0.72}}},
            "per_label": {"diagnosis": {"I48": {m: {"auroc": v} for m, v in aurocs.items()}}},
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(metrics))
        return metrics


def fake_simulation(out_dir, *, n_patients, seed, workers=None, progress=True):
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = {"n_patients": n_patients, "seed": seed, "simulator_version": SIMULATOR_VERSION}
    (out_dir / "SIMULATED.json").write_text(json.dumps(marker))


@pytest.fixture
def pipeline(monkeypatch):
    fake = FakePipeline()
    monkeypatch.setattr(runner, "run_pipeline", fake)
    monkeypatch.setattr(runner, "simulate_hospital", fake_simulation)
    return fake


def trained(fake: FakePipeline, out: Path) -> list[str]:
    return [folder.relative_to(out / "cells").as_posix() for folder, _ in fake.calls]


def test_a_stopped_study_resumes_with_the_cells_it_had_not_finished(pipeline, tmp_path):
    grid, data, out = load_grid(TINY_GRID), tmp_path / "data", tmp_path / "out"
    first = run_study(grid, data, out, max_cells=1, progress=False)
    assert [c.name for c in first.trained] == ["full/ours/seed-1"] and len(first.complete) == 1
    second = run_study(grid, data, out, progress=False)
    assert [c.name for c in second.trained] == ["full/ours/seed-2", "labels-half/ours/seed-1"]
    assert trained(pipeline, out) == ["full/ours/seed-1", "full/ours/seed-2", "labels-half/ours/seed-1"]
    assert all(resume for _, resume in pipeline.calls), "a cell always resumes from the stages it has"
    assert run_study(grid, data, out, progress=False).trained == [], "a finished study trains nothing"
    assert sorted(p.name for p in data.iterdir()) == ["seed-1", "seed-2"], "one hospital per seed"


def test_a_cell_killed_midway_is_not_complete_and_runs_again(monkeypatch, pipeline, tmp_path):
    grid, data, out = load_grid(TINY_GRID), tmp_path / "data", tmp_path / "out"
    pipeline.fail_on = "full/ours/seed-2"
    with pytest.raises(RuntimeError, match="killed"):
        run_study(grid, data, out, progress=False)
    assert (out / "cells/full/ours/seed-1" / CELL_FILE).exists()
    assert not (out / "cells/full/ours/seed-2" / CELL_FILE).exists()
    pipeline.fail_on = None
    again = run_study(grid, data, out, progress=False)
    assert [c.name for c in again.trained] == ["full/ours/seed-2", "labels-half/ours/seed-1"]


def test_the_cell_records_its_settings_hospital_and_code_visibility(pipeline, tmp_path):
    out = tmp_path / "out"
    run_study(load_grid(TINY_GRID), tmp_path / "data", out, max_cells=1, progress=False)
    marker = json.loads((out / "cells/full/ours/seed-1" / CELL_FILE).read_text())
    assert (marker["arm"], marker["config"], marker["seed"], marker["label_fraction"]) == ("full", "ours", 1, 1.0)
    assert marker["settings"]["seed"] == 1 and marker["hospital"] == {
        "n_patients": 150,
        "seed": 1,
        "simulator_version": SIMULATOR_VERSION,
    }
    assert marker["visibility"] == {"I48": "visible"}, "atrial fibrillation is documented as visible"


def test_a_finished_cell_is_refused_when_the_grid_now_gives_it_other_settings(pipeline, tmp_path):
    grid, out = load_grid(TINY_GRID), tmp_path / "out"
    run_study(grid, tmp_path / "data", out, max_cells=1, progress=False)
    grid.configs["ours"]["pretrain.epochs"] = 5
    with pytest.raises(ConfigError, match="finished with other settings"):
        run_study(grid, tmp_path / "data", out, progress=False)


def test_a_seed_folder_holding_another_hospital_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "simulate_hospital", fake_simulation)
    ensure_hospital(tmp_path / "seed-1", patients=150, seed=1, workers=1)
    ensure_hospital(tmp_path / "seed-1", patients=150, seed=1, workers=1)  # reused
    with pytest.raises(ConfigError, match="holds 150 patients of seed 1"):
        ensure_hospital(tmp_path / "seed-1", patients=300, seed=1, workers=1)
    with pytest.raises(ConfigError, match=re.escape("pre-registered on 0.9.0")):
        ensure_hospital(tmp_path / "seed-1", patients=150, seed=1, workers=1, simulator_version="0.9.0")


def test_a_study_pinned_to_another_simulator_version_does_not_start(pipeline, tmp_path):
    grid = dataclasses.replace(load_grid(TINY_GRID), simulator_version="0.9.0")
    with pytest.raises(
        ConfigError, match=re.escape(f"pre-registered on simulator 0.9.0, this checkout's is {SIMULATOR_VERSION}")
    ):
        run_study(grid, tmp_path / "data", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists(), "nothing written, nothing trained"
    assert load_grid(STUDY_GRID).simulator_version == SIMULATOR_VERSION, "the shipped grid is on the frozen version"


def test_stage_checkpoints_are_reused_only_when_their_settings_match(tmp_path):
    grid = load_grid(TINY_GRID)
    ours = grid.train_config(Cell("full", "ours", 1, 1.0))
    regression = grid.train_config(Cell("full", "lab-regression", 1, 1.0))
    half = grid.train_config(Cell("labels-half", "ours", 1, 0.5))
    donor = tmp_path / "full-ours"
    for stage in ("pretrain", "labs", "diagnosis", "ecg_only", "multimodal"):
        save_stage(checkpoint_path(donor / "checkpoints", stage), {"m": nn.Linear(1, 1)}, FitResult(), ours)
    # another variant of pre-training: the baselines are the same, the method's stages are not
    assert adopt_checkpoints(tmp_path / "full-regression", regression, [donor]) == ["ecg_only", "multimodal"]
    # fewer labels: pre-training never sees labels, everything after it does
    assert adopt_checkpoints(tmp_path / "half-ours", half, [donor]) == ["pretrain"]
    assert adopt_checkpoints(tmp_path / "half-ours", half, [donor]) == [], "what a cell has is kept"


def test_the_report_of_a_partial_study_counts_what_is_missing(pipeline, tmp_path):
    grid, out = load_grid(TINY_GRID), tmp_path / "out"
    run_study(grid, tmp_path / "data", out, max_cells=2, progress=False)
    report = study_report(grid, out)
    assert (len(report.results), report.n_cells_expected) == (2, 3)
    json_path, figure_path = write_outputs(report, out)[:2]
    study = json.loads(json_path.read_text())
    assert study["primary_endpoint"]["result"]["n"] == 2
    assert study["primary_endpoint"]["result"]["mean_delta"] == pytest.approx(0.025)
    assert figure_path.stat().st_size > 10_000


def test_a_cell_finished_before_a_setting_existed_stays_complete(pipeline, tmp_path):
    grid, out = load_grid(TINY_GRID), tmp_path / "out"
    run_study(grid, tmp_path / "data", out, max_cells=1, progress=False)
    marker_path = out / "cells/full/ours/seed-1" / CELL_FILE
    marker = json.loads(marker_path.read_text())
    del marker["settings"]["pretrain"]["mask_ratio"]  # as an older version of the code wrote it
    marker_path.write_text(json.dumps(marker))
    assert [c.name for c in run_study(grid, tmp_path / "data", out, max_cells=1, progress=False).trained] == [
        "full/ours/seed-2"
    ]


def test_a_run_of_the_variants_alone_keeps_the_primary_analysis_and_compares_every_variant(pipeline, tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "out"
    args = ["study", "--grid", str(TINY_GRID), "--data", str(data), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    assert not (out / VARIANTS_FIGURE_FILE).exists(), "one variant: nothing to compare yet"

    assert main([*args, "--configs", "lab-regression", "--arms", "full"]) == 0
    study = json.loads((out / "study.json").read_text())
    assert {(s["arm"], s["config"]) for s in study["summaries"]} == {
        ("full", "ours"),
        ("labels-half", "ours"),
        ("full", "lab-regression"),
    }, "the variants are reported beside the pre-registered analysis, not in its place"
    assert study["primary_endpoint"]["result"]["n"] == 2
    assert (out / VARIANTS_FIGURE_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    (out / "study.json").unlink()
    capsys.readouterr()
    assert main(["study", "--report", str(out)]) == 0
    assert "| full | lab-regression | 2 |" in capsys.readouterr().out
    assert json.loads((out / "study.json").read_text()) == study, "--report rewrites the same analysis"

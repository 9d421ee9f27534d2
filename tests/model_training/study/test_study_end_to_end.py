"""``ecg-train study`` end to end on the tiny grid: real simulation, training and evaluation per cell."""

import filecmp
import json

import pytest

from model_training.cli import main
from model_training.config import CONFIG_DIR
from model_training.study import runner

TINY_GRID = str(CONFIG_DIR / "study-tiny.yaml")


@pytest.mark.slow
def test_a_study_stopped_after_one_cell_resumes_and_reports(tmp_path, monkeypatch, capsys):
    data, out = tmp_path / "data", tmp_path / "out"
    args = ["study", "--grid", TINY_GRID, "--data", str(data), "--out", str(out), "--no-progress"]
    assert main([*args, "--max-cells", "1"]) == 0
    first_cell = out / "cells/full/ours/seed-1"
    assert (first_cell / "cell.json").exists() and (first_cell / "model/model.ts").exists()
    assert "1 of 3 complete" in capsys.readouterr().out

    ran = []
    real_pipeline = runner.run_pipeline

    def recording(config, data_dir, out_dir, **kwargs):
        ran.append(out_dir)
        return real_pipeline(config, data_dir, out_dir, **kwargs)

    monkeypatch.setattr(runner, "run_pipeline", recording)
    assert main(args) == 0
    assert first_cell not in ran, "the finished cell was trained again"
    assert ran == [out / "cells/full/ours/seed-2", out / "cells/labels-half/ours/seed-1"]
    half = out / "cells/labels-half/ours/seed-1/checkpoints"
    assert filecmp.cmp(half / "pretrain.pt", first_cell / "checkpoints/pretrain.pt", shallow=False), (
        "the label-fraction arm reuses its seed's pre-training: it never sees labels"
    )

    study = json.loads((out / "study.json").read_text())
    assert (study["cells_complete"], study["cells_expected"]) == (3, 3)
    primary = study["primary_endpoint"]
    assert primary["seeds"] == [1, 2] and primary["result"]["n"] == 2
    seeds = {(c["arm"], c["seed"]): c for c in study["cells"]}
    assert set(seeds) == {("full", 1), ("full", 2), ("labels-half", 1)}
    for cell in seeds.values():
        metrics = json.loads(
            (out / "cells" / cell["arm"] / "ours" / f"seed-{cell['seed']}" / "metrics.json").read_text()
        )
        assert cell["macro"]["ours"] == metrics["diagnosis"]["macro_auroc"]["ours"]["value"]
        assert sum(cell["groups"][g]["n_codes"] for g in ("visible", "partial", "invisible")) > 0
    assert (out / "study.png").stat().st_size > 10_000

    capsys.readouterr()
    assert main(["study", "--report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Cells complete: 3 of 3." in printed and "| labels-half | ours | 1 |" in printed


def test_an_arm_the_grid_does_not_define_is_refused_before_anything_runs(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "out"
    args = ["study", "--grid", TINY_GRID, "--data", str(data), "--out", str(out), "--arms", "half", "--no-progress"]
    assert main(args) == 1
    assert "unknown arm(s) ['half']" in capsys.readouterr().err
    assert not data.exists()

"""Running a study's cells, resumably.

Per seed, one simulated hospital in ``DATA/seed-N`` (simulated once, checked against the grid's
patients and seed when reused); its cohort is built by the first cell's pipeline and reused by
the others (``ensure_cohort`` builds only when ``cohort.json``, written last, is absent).

Per cell, one ``ecg-train run`` pipeline in ``OUT/cells/ARM/CONFIG/seed-N`` with ``resume``: a
cell killed mid-way goes on from its last finished epoch (each stage's checkpoint, and within a
stage each epoch's, is written atomically). When the pipeline has returned, ``cell.json`` is
written (temporary file, then rename): only then is the cell complete, and a rerun skips it.

Stages are not trained twice for the same data and settings: before a cell runs, every stage
checkpoint another cell of the same seed holds whose recorded settings equal this cell's (the very
check ``--resume`` applies, :func:`model_training.train.checkpoints.same_stage_settings`) is copied in. So
the two baselines are trained once per (arm, seed), whatever the number of variants that leave
``baselines``, ``model``, ``batch_size`` and ``weight_decay`` alone, and pre-training once per
(seed, pre-training settings), shared by every arm: it never sees labels.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from model_training.config import TrainConfig, with_defaults
from model_training.errors import ConfigError
from model_training.evaluate import METRICS_FILE
from model_training.simulator.physiology import documented_visibility
from model_training.simulator.simulate import COMPLETION_MARKER, SIMULATOR_VERSION, simulate_hospital
from model_training.study.analysis import CellResult, cell_result, code_visibility
from model_training.study.grid import Cell, StudyGrid, save_grid
from model_training.study.report import StudyReport
from model_training.train.checkpoints import STAGE_SECTIONS, checkpoint_path, same_stage_settings, stored_stage_config
from model_training.train.pipeline import CHECKPOINT_DIR, run_pipeline

log = logging.getLogger(__name__)

CELL_FILE = "cell.json"
GRID_FILE = "grid.yaml"
#: Settings that change how fast a cell runs, not what it learns; a finished cell is not refused over them.
_RUNTIME_KEYS = ("device", "num_threads", "loader_workers", "progress")


@dataclass(frozen=True, slots=True)
class StudyRun:
    cells: list[Cell]  # every cell the study asked for, in run order
    trained: list[Cell]  # the cells this invocation ran to completion
    complete: list[Cell]  # every cell complete now (trained now or before)


def run_study(
    grid: StudyGrid,
    data_dir: Path,
    out_dir: Path,
    *,
    configs: tuple[str, ...] | None = None,
    arms: tuple[str, ...] | None = None,
    max_cells: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> StudyRun:
    """Run every unfinished cell of ``configs`` (default: the grid's ``run_by_default``) in ``arms`` (default: all);
    ``max_cells`` stops after that many cells were trained (the rest are left for the next invocation)."""
    if grid.simulator_version not in (None, SIMULATOR_VERSION):
        raise ConfigError(f"the grid is pre-registered on simulator {grid.simulator_version}, this checkout's is "
                          f"{SIMULATOR_VERSION}: check out the frozen version or register a new study")  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    save_grid(grid, out_dir / GRID_FILE)
    cells = grid.cells(configs, arms)
    trained: list[Cell] = []
    with tqdm(total=len(cells), desc="study", unit="cell", disable=not progress) as bar:
        for cell in cells:
            config = _with_device(grid.train_config(cell), device)
            if not is_complete(cell.folder(out_dir), config):
                if max_cells is not None and len(trained) >= max_cells:
                    break
                bar.set_postfix_str(cell.name)
                run_cell(grid, cell, config, data_dir, out_dir)
                trained.append(cell)
            bar.update(1)
    complete = [c for c in cells if is_complete(c.folder(out_dir), _with_device(grid.train_config(c), device))]
    return StudyRun(cells, trained, complete)


def run_cell(grid: StudyGrid, cell: Cell, config: TrainConfig, data_dir: Path, out_dir: Path) -> None:
    started_s = time.monotonic()
    seed_dir = data_dir / f"seed-{cell.seed}"
    ensure_hospital(
        seed_dir,
        patients=grid.patients,
        seed=cell.seed,
        workers=config.data.workers,
        simulator_version=grid.simulator_version,
    )
    folder = cell.folder(out_dir)
    donors = [other.folder(out_dir) for other in grid.cells(tuple(grid.configs)) if other.seed == cell.seed]
    adopt_checkpoints(folder, config, [d for d in donors if d != folder])
    log.info("study cell %s: training in %s", cell.name, folder)
    run_pipeline(config, seed_dir, folder, resume=True)
    codes = tuple(json.loads((folder / METRICS_FILE).read_text())["per_label"]["diagnosis"])
    marker = {"arm": cell.arm, "config": cell.config, "seed": cell.seed, "label_fraction": cell.label_fraction,
              "settings": _comparable(config), "hospital": json.loads((seed_dir / COMPLETION_MARKER).read_text()),
              "visibility": code_visibility(codes, documented_visibility()),
              "wall_s": round(time.monotonic() - started_s, 1)}  # fmt: skip
    _write_atomically(folder / CELL_FILE, json.dumps(marker, indent=2) + "\n")


def is_complete(folder: Path, config: TrainConfig) -> bool:
    """Whether the cell in ``folder`` finished; refuses one that finished under other settings."""
    marker = folder / CELL_FILE
    if not marker.exists():
        return False
    if with_defaults(json.loads(marker.read_text())["settings"], _comparable(TrainConfig())) != _comparable(config):
        raise ConfigError(f"{folder}: finished with other settings than the grid now gives it; use a new --out")
    return True


def ensure_hospital(
    seed_dir: Path, *, patients: int, seed: int, workers: int | None, simulator_version: str | None = None
) -> None:
    """Simulate ``patients`` with ``seed`` into ``seed_dir`` unless a complete simulation of exactly that is there
    (and, when the grid pins one, by that simulator version)."""
    marker = seed_dir / COMPLETION_MARKER
    if marker.exists():
        found = json.loads(marker.read_text())
        if (found["n_patients"], found["seed"]) != (patients, seed):
            raise ConfigError(f"{seed_dir}: holds {found['n_patients']} patients of seed {found['seed']}, the grid "
                              f"asks for {patients} of seed {seed}; use a new --data")  # fmt: skip
        if simulator_version is not None and found.get("simulator_version") != simulator_version:
            raise ConfigError(f"{seed_dir}: simulated by simulator {found.get('simulator_version')}, the grid is "
                              f"pre-registered on {simulator_version}; use a new --data")  # fmt: skip
        return
    shutil.rmtree(seed_dir / "cohort", ignore_errors=True)  # built from an incomplete simulation, if any
    log.info("simulating %d patients with seed %d into %s", patients, seed, seed_dir)
    simulate_hospital(seed_dir, n_patients=patients, seed=seed, workers=workers, progress=False)


def adopt_checkpoints(folder: Path, config: TrainConfig, donors: list[Path]) -> list[str]:
    """Copy into ``folder`` each missing stage checkpoint a donor run folder holds with identical stage settings."""
    adopted = []
    for stage in STAGE_SECTIONS:
        target = checkpoint_path(folder / CHECKPOINT_DIR, stage)
        if target.exists():
            continue
        for donor in donors:
            source = checkpoint_path(donor / CHECKPOINT_DIR, stage)
            if source.exists() and same_stage_settings(stored_stage_config(source), config, stage):
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_suffix(".pt.partial")
                shutil.copyfile(source, partial)
                partial.replace(target)
                log.info("%s: %s reused from %s", folder, stage, donor)
                adopted.append(stage)
                break
    return adopted


def load_cell_results(grid: StudyGrid, out_dir: Path, configs: tuple[str, ...] | None = None) -> list[CellResult]:
    """The results of every complete cell of ``configs`` (default: every variant of the grid)."""
    results = []
    for cell in grid.cells(configs if configs is not None else tuple(grid.configs)):
        folder = cell.folder(out_dir)
        if (folder / CELL_FILE).exists():
            marker = json.loads((folder / CELL_FILE).read_text())
            metrics = json.loads((folder / METRICS_FILE).read_text())
            results.append(cell_result(cell.arm, cell.config, cell.seed, metrics, marker["visibility"]))
    return results


def study_report(grid: StudyGrid, out_dir: Path, configs: tuple[str, ...] | None = None) -> StudyReport:
    """The report over the complete cells of ``configs`` (default: the default variants and any other that has a
    complete cell), counted against every cell of those variants."""
    if configs is None:
        started = {c.config for c in grid.cells(tuple(grid.configs)) if (c.folder(out_dir) / CELL_FILE).exists()}
        configs = tuple(name for name in grid.configs if name in started or name in grid.run_by_default)
    return StudyReport.of(grid, load_cell_results(grid, out_dir, configs), len(grid.cells(configs)))


def _with_device(config: TrainConfig, device: str | None) -> TrainConfig:
    return config if device is None else dataclasses.replace(config, device=device)


def _comparable(config: TrainConfig) -> dict[str, object]:
    settings = config.to_dict()
    for key in _RUNTIME_KEYS:
        settings.pop(key)
    settings["data"] = {k: v for k, v in settings["data"].items() if k != "workers"}  # type: ignore[union-attr]
    return settings


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)

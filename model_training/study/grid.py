"""The study grid: which cells a pre-registered study trains, read from YAML.

::

    base_config: demo.yaml        # a training YAML, relative to this file
    patients: 10000               # simulated patients per seed
    seeds: [0, 1, 2, 3, 4]        # each seed is the simulated hospital's seed AND the training seed
    arms:                         # label fractions; `seeds: all` or a list drawn from `seeds`
      - {name: full, label_fraction: 1.0, seeds: all}
      - {name: labels-10pct, label_fraction: 0.1, seeds: [0, 1, 2]}
    configs:                      # named variants: dotted overrides of the base configuration
      ours: {}
      lab-regression: {pretrain.regression_weight: 1.0}
    run_by_default: [ours]        # the variants a study runs without --configs
    primary_endpoint: {arm: full, config: ours}
    goals: {delta_positive_every_seed: true, min_gap_closed: 0.35, min_lab_macro_auroc: 0.70}

The primary endpoint is always the paired difference, across the seeds of ``primary_endpoint.arm``,
of the test-fold macro AUROC over diagnosis codes, the method ("ours") minus the ECG-only baseline
trained from scratch on the same split; only which arm and variant it is read on is configurable.
Unknown keys are refused with their path, as in :mod:`model_training.config`; every variant is built
once when the grid is read, so a typo in a dotted key fails before anything trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from model_training.config import TrainConfig, load_config
from model_training.errors import ConfigError

CELLS_DIR = "cells"
#: Keys the study sets per cell; a variant may not override them.
STUDY_KEYS = ("seed", "label_fraction", "progress", "data.simulate_seed", "data.simulate_patients", "data.cohort_dir")
PRIMARY_METRIC = "paired difference of test macro AUROC across seeds, ours - ecg_only"


@dataclass(frozen=True, slots=True)
class Arm:
    name: str
    label_fraction: float
    seeds: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PrimaryEndpoint:
    arm: str = "full"
    config: str = "ours"
    metric: str = PRIMARY_METRIC


@dataclass(frozen=True, slots=True)
class Goals:
    """What the study pre-registers as success, read on the primary endpoint's arm and variant."""

    delta_positive_every_seed: bool = True
    min_gap_closed: float = 0.35  # mean over seeds of (ours - ecg_only) / (multimodal - ecg_only)
    min_lab_macro_auroc: float = 0.70  # mean over seeds of the method's lab-abnormality macro AUROC


@dataclass(frozen=True, slots=True)
class Cell:
    """One training run of the study: an arm, a configuration variant, a seed."""

    arm: str
    config: str
    seed: int
    label_fraction: float

    def folder(self, out_dir: Path) -> Path:
        return out_dir / CELLS_DIR / self.arm / self.config / f"seed-{self.seed}"

    @property
    def name(self) -> str:
        return f"{self.arm}/{self.config}/seed-{self.seed}"


@dataclass(frozen=True, slots=True)
class StudyGrid:
    base_config: Path
    patients: int
    seeds: tuple[int, ...]
    arms: tuple[Arm, ...]
    configs: dict[str, dict[str, object]]  # variant name → dotted overrides of the base configuration
    run_by_default: tuple[str, ...]
    primary_endpoint: PrimaryEndpoint = field(default_factory=PrimaryEndpoint)
    goals: Goals = field(default_factory=Goals)
    simulator_version: str | None = None  # the frozen simulated hospital the study is pre-registered on

    def cells(self, configs: tuple[str, ...] | None = None, arms: tuple[str, ...] | None = None) -> list[Cell]:
        """The cells of ``configs`` (default: ``run_by_default``) in the ``arms`` named (default: every arm), in run
        order: arm, then variant, then seed."""
        chosen = self.run_by_default if configs is None else configs
        unknown = sorted(set(chosen) - set(self.configs))
        if unknown:
            raise ConfigError(f"unknown config(s) {unknown}; the grid defines {sorted(self.configs)}")
        names = [arm.name for arm in self.arms]
        unknown_arms = sorted(set(arms or ()) - set(names))
        if unknown_arms:
            raise ConfigError(f"unknown arm(s) {unknown_arms}; the grid defines {names}")
        return [Cell(arm.name, name, seed, arm.label_fraction) for arm in self.arms
                if arms is None or arm.name in arms for name in chosen for seed in arm.seeds]  # fmt: skip

    def train_config(self, cell: Cell) -> TrainConfig:
        """The base configuration with the variant's overrides and the cell's seed, data and label fraction."""
        overrides = dict(self.configs[cell.config])
        overrides.update({"seed": cell.seed, "label_fraction": cell.label_fraction, "progress": False,
                          "data.simulate_seed": cell.seed, "data.simulate_patients": self.patients,
                          "data.cohort_dir": None})  # fmt: skip
        return load_config(self.base_config, overrides)

    def to_dict(self) -> dict[str, object]:
        return {
            "base_config": str(self.base_config),
            "patients": self.patients,
            "seeds": list(self.seeds),
            "arms": [{"name": a.name, "label_fraction": a.label_fraction, "seeds": list(a.seeds)} for a in self.arms],
            "configs": {name: dict(overrides) for name, overrides in self.configs.items()},
            "run_by_default": list(self.run_by_default),
            "primary_endpoint": {"arm": self.primary_endpoint.arm, "config": self.primary_endpoint.config},
            "goals": {"delta_positive_every_seed": self.goals.delta_positive_every_seed,
                      "min_gap_closed": self.goals.min_gap_closed,
                      "min_lab_macro_auroc": self.goals.min_lab_macro_auroc},
            "simulator_version": self.simulator_version,
        }  # fmt: skip


def load_grid(path: Path) -> StudyGrid:
    """Read and check a grid file; ``base_config`` is resolved against the grid file's folder."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return grid_from_dict(raw, path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def save_grid(grid: StudyGrid, path: Path) -> None:
    path.write_text(yaml.safe_dump(grid.to_dict(), sort_keys=False))


def grid_from_dict(raw: object, base_dir: Path) -> StudyGrid:
    keys = (
        "base_config",
        "patients",
        "seeds",
        "arms",
        "configs",
        "run_by_default",
        "primary_endpoint",
        "goals",
        "simulator_version",
    )
    raw = _mapping(raw, "grid", keys, required=keys[:5])
    seeds = tuple(_int(s, "seeds") for s in _list(raw["seeds"], "seeds"))
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds: expected distinct integers, got {list(seeds)}")
    patients = _int(raw["patients"], "patients")
    if patients < 1:
        raise ConfigError(f"patients: must be at least 1, got {patients}")
    configs = _configs(raw["configs"])
    run_by_default = tuple(_str(n, "run_by_default") for n in _list(raw.get("run_by_default", list(configs)),
                                                                      "run_by_default"))  # fmt: skip
    grid = StudyGrid(
        base_config=_base_config(raw["base_config"], base_dir),
        patients=patients,
        seeds=seeds,
        arms=_arms(raw["arms"], seeds),
        configs=configs,
        run_by_default=run_by_default,
        primary_endpoint=_primary_endpoint(raw.get("primary_endpoint", {})),
        goals=_goals(raw.get("goals", {})),
        simulator_version=None if raw.get("simulator_version") is None else _str(raw["simulator_version"],
                                                                                  "simulator_version"),
    )  # fmt: skip
    _check_references(grid)
    return grid


def _base_config(raw: object, base_dir: Path) -> Path:
    if not isinstance(raw, str) or not raw:
        raise ConfigError(f"base_config: expected a path to a training YAML, got {raw!r}")
    path = (base_dir / raw).resolve()
    if not path.is_file():
        raise ConfigError(f"base_config: {path} not found")
    return path


def _arms(raw: object, seeds: tuple[int, ...]) -> tuple[Arm, ...]:
    arms = []
    for i, item in enumerate(_list(raw, "arms")):
        where = f"arms[{i}]"
        entry = _mapping(item, where, ("name", "label_fraction", "seeds"), required=("name", "label_fraction"))
        fraction = entry["label_fraction"]
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 < fraction <= 1.0:
            raise ConfigError(f"{where}.label_fraction: expected a number in (0, 1], got {fraction!r}")
        chosen = entry.get("seeds", "all")
        arm_seeds = seeds if chosen == "all" else tuple(_int(s, f"{where}.seeds") for s in _list(chosen, where))
        stray = sorted(set(arm_seeds) - set(seeds))
        if stray or not arm_seeds:
            raise ConfigError(f"{where}.seeds: {list(arm_seeds)} must be `all` or a non-empty subset of {list(seeds)}")
        arms.append(Arm(_str(entry["name"], f"{where}.name"), float(fraction), arm_seeds))
    names = [a.name for a in arms]
    if not arms or len(set(names)) != len(names):
        raise ConfigError(f"arms: expected at least one arm with distinct names, got {names}")
    return tuple(arms)


def _configs(raw: object) -> dict[str, dict[str, object]]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"configs: expected a mapping of variant names to overrides, got {raw!r}")
    configs = {}
    for name, overrides in raw.items():
        overrides = {} if overrides is None else overrides
        if not isinstance(overrides, dict):
            raise ConfigError(f"configs.{name}: expected a mapping of dotted keys to values, got {overrides!r}")
        reserved = sorted(set(overrides) & set(STUDY_KEYS))
        if reserved:
            raise ConfigError(f"configs.{name}: {reserved} are set by the study per cell")
        configs[_str(name, "configs")] = {str(k): v for k, v in overrides.items()}
    return configs


def _primary_endpoint(raw: object) -> PrimaryEndpoint:
    entry = _mapping(raw, "primary_endpoint", ("arm", "config"))
    return PrimaryEndpoint(**{k: _str(v, f"primary_endpoint.{k}") for k, v in entry.items()})


def _goals(raw: object) -> Goals:
    entry = _mapping(raw, "goals", ("delta_positive_every_seed", "min_gap_closed", "min_lab_macro_auroc"))
    every = entry.get("delta_positive_every_seed", True)
    if not isinstance(every, bool):
        raise ConfigError(f"goals.delta_positive_every_seed: expected true or false, got {every!r}")
    numbers = {}
    for key in ("min_gap_closed", "min_lab_macro_auroc"):
        value = entry.get(key, getattr(Goals(), key))
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"goals.{key}: expected a number, got {value!r}")
        numbers[key] = float(value)
    return Goals(every, **numbers)


def _check_references(grid: StudyGrid) -> None:
    unknown = sorted(set(grid.run_by_default) - set(grid.configs))
    if unknown:
        raise ConfigError(f"run_by_default: {unknown} are not in configs")
    endpoint = grid.primary_endpoint
    if endpoint.arm not in {a.name for a in grid.arms} or endpoint.config not in grid.configs:
        raise ConfigError(f"primary_endpoint: arm {endpoint.arm!r} or config {endpoint.config!r} is not in the grid")
    first = grid.arms[0]
    for name in grid.configs:  # refuse a bad variant now, not hours into the study
        grid.train_config(Cell(first.name, name, first.seeds[0], first.label_fraction))


def _mapping(raw: object, where: str, known: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    missing = [k for k in required if k not in raw]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {missing}")
    return raw


def _list(raw: object, where: str) -> list:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expected a list, got {raw!r}")
    return raw


def _int(raw: object, where: str) -> int:
    if type(raw) is not int:
        raise ConfigError(f"{where}: expected an integer, got {raw!r}")
    return raw


def _str(raw: object, where: str) -> str:
    if not isinstance(raw, str) or not raw or "/" in raw:
        raise ConfigError(f"{where}: expected a name (no '/'), got {raw!r}")
    return raw

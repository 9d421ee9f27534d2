"""The study grid file: the shipped pre-registered grid, the cells it makes, and what it refuses."""

import pytest
import yaml

from model_training.config import CONFIG_DIR, load_config
from model_training.errors import ConfigError
from model_training.study.grid import Cell, grid_from_dict, load_grid

STUDY = CONFIG_DIR / "study.yaml"


def test_the_shipped_grid_is_the_pre_registered_design():
    grid = load_grid(STUDY)
    assert grid.patients == 10_000 and len(grid.seeds) == 5
    assert 0 not in grid.seeds, "seed 0 drew the calibration cohort; the study must not reuse its patients"
    arms = {arm.name: arm for arm in grid.arms}
    assert arms["full"].label_fraction == 1.0 and arms["full"].seeds == grid.seeds
    assert arms["labels-10pct"].label_fraction == 0.1 and arms["labels-10pct"].seeds == grid.seeds[:3]
    assert grid.run_by_default == ("ours",) and grid.configs["ours"] == {}
    assert (grid.primary_endpoint.arm, grid.primary_endpoint.config) == ("full", "ours")
    assert (grid.goals.min_gap_closed, grid.goals.min_lab_macro_auroc) == (0.35, 0.70)
    assert len(grid.cells()) == 5 + 3


def test_config_ours_is_the_demo_recipe_with_the_cells_seed_and_label_fraction():
    grid = load_grid(STUDY)
    cell = Cell("labels-10pct", "ours", 2, 0.1)
    config = grid.train_config(cell)
    demo = load_config(CONFIG_DIR / "demo.yaml")
    assert (config.seed, config.data.simulate_seed, config.data.simulate_patients) == (2, 2, 10_000)
    assert config.label_fraction == 0.1 and not config.progress
    assert (config.model, config.pretrain, config.diagnosis, config.baselines) == (
        demo.model, demo.pretrain, demo.diagnosis, demo.baselines)  # fmt: skip


def test_a_variant_changes_only_its_dotted_keys():
    grid = load_grid(STUDY)
    variant = grid.train_config(Cell("full", "lab-regression", 0, 1.0))
    assert variant.pretrain.regression_weight == 1.0
    assert variant.baselines == grid.train_config(Cell("full", "ours", 0, 1.0)).baselines


def test_cells_run_arm_by_arm_then_variant_then_seed():
    grid = load_grid(STUDY)
    cells = grid.cells(("ours", "lab-regression"))
    assert [(c.arm, c.config, c.seed) for c in cells[:6]] == [
        ("full", "ours", s) for s in grid.seeds] + [("full", "lab-regression", grid.seeds[0])]  # fmt: skip
    assert cells[-1] == Cell("labels-10pct", "lab-regression", grid.seeds[2], 0.1)
    with pytest.raises(ConfigError, match="unknown config"):
        grid.cells(("nope",))


def test_the_variants_can_run_on_the_primary_arm_alone():
    grid = load_grid(STUDY)
    cells = grid.cells(tuple(grid.configs), arms=("full",))
    assert {c.arm for c in cells} == {"full"} and len(cells) == len(grid.configs) * len(grid.seeds)
    with pytest.raises(ConfigError, match=r"unknown arm\(s\) \['half'\]"):
        grid.cells(arms=("half",))


def raw_grid(**changes) -> dict:
    raw = yaml.safe_load(STUDY.read_text())
    raw.update(changes)
    return raw


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"patiens": 10}, r"unknown key\(s\) \['patiens'\]"),
        ({"arms": [{"name": "full", "label_fraction": 1.0, "seed": "all"}]}, r"arms\[0\]: unknown key"),
        ({"arms": [{"name": "x", "label_fraction": 1.5}]}, r"label_fraction: expected a number in \(0, 1\]"),
        ({"arms": [{"name": "x", "label_fraction": 0.1, "seeds": [7]}]}, "must be `all` or a non-empty subset"),
        ({"configs": {"ours": {}, "bad": {"seed": 3}}}, r"configs.bad: \['seed'\] are set by the study"),
        ({"configs": {"ours": {}, "typo": {"pretrain.regresion_weight": 1.0}}}, "regresion_weight"),
        ({"run_by_default": ["missing"]}, r"run_by_default: \['missing'\] are not in configs"),
        ({"primary_endpoint": {"arm": "half", "config": "ours"}}, "primary_endpoint"),
        ({"goals": {"min_gap": 0.3}}, r"goals: unknown key"),
        ({"seeds": [0, 0]}, "distinct"),
    ],
)
def test_a_bad_grid_is_refused_with_the_key_named(changes, message):
    with pytest.raises(ConfigError, match=message):
        grid_from_dict(raw_grid(**changes), CONFIG_DIR)


def test_the_base_config_is_read_relative_to_the_grid_file(tmp_path):
    with pytest.raises(ConfigError, match=r"base_config: .*not found"):
        grid_from_dict(raw_grid(base_config="demo.yaml"), tmp_path)

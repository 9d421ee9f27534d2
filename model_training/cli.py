"""``ecg-train``: simulate a hospital, report on a cohort, plot example ECGs, train, evaluate, export, study.

Thin on purpose: each command parses its arguments and calls one library function.
Exit codes: 0 success, 1 a dataset or configuration error (the message names the
file and the reason), 2 bad command-line usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from integrations.errors import IntegrationError
from model_training.errors import ModelTrainingError

log = logging.getLogger("ecg-train")

DEFAULT_PATIENTS = 4000
DEFAULT_SEED = 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecg-train",
        description="Train the ECG model that carries clinical knowledge, on MIMIC-IV-ECG or the simulated hospital.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    simulate = commands.add_parser(
        "simulate", help="write a simulated hospital in the MIMIC-IV-ECG layout",
        description="Write a simulated hospital (WFDB ECGs, labs, vitals, OMR, ICD-10 diagnoses) in the "
        "MIMIC-IV-ECG / ext-ICD / MIMIC-IV / MIMIC-IV-ED layout. Deterministic for a seed.",
    )  # fmt: skip
    simulate.add_argument(
        "--patients", type=int, default=DEFAULT_PATIENTS, help="number of patients (default %(default)s)"
    )
    simulate.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default %(default)s)")
    simulate.add_argument("--out", type=Path, required=True, help="output folder")
    simulate.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    simulate.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    report = commands.add_parser(
        "cohort-report", help="build the cohort and print label prevalence and ECG-vs-clinical visibility",
        description="Build (or reuse) the cohort under DIR/cohort, then print the prevalence of every diagnosis and "
        "lab-abnormality label and, per diagnosis, the held-out AUROC of a logistic regression on handcrafted "
        "ECG features versus on the clinical features. Also writes DIR/cohort/report.md and report.json.",
    )  # fmt: skip
    report.add_argument("data_dir", type=Path, metavar="DIR", help="dataset root (simulated or real MIMIC layout)")
    report.add_argument("--layout", type=Path, default=None, help="TOML/YAML file overriding table paths and columns")
    report.add_argument("--cohort-dir", type=Path, default=None, help="where the cohort arrays go (default DIR/cohort)")
    report.add_argument("--rebuild", action="store_true", help="rebuild the cohort even if one exists")
    report.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    report.add_argument("--no-progress", action="store_true", help="hide progress bars")

    examples = commands.add_parser(
        "plot-examples", help="plot simulated 12-lead ECGs of textbook conditions",
        description="Synthesize and plot, in the standard 12-lead layout, a normal ECG, hyperkalemia (K 7.0), "
        "atrial fibrillation and an anterior STEMI, with the simulator's own physiology.",
    )  # fmt: skip
    examples.add_argument("--out", type=Path, required=True, help="folder for the PNG files")
    examples.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default %(default)s)")
    _add_training_commands(commands)
    return parser


def _add_training_commands(commands: argparse._SubParsersAction) -> None:
    from model_training.config import DEFAULT_CONFIG

    run = commands.add_parser(
        "run", help="train the three stages and both baselines, evaluate, export the model",
        description="Simulate a hospital into DATA if it holds no dataset, build the cohort if needed, then train "
        "stage 1 (ECG-clinical joint embedding), stage 2 (lab-abnormality heads), stage 3 (diagnosis head), the "
        "ECG-only and the multimodal baselines; write OUT/metrics.json, OUT/report.md and OUT/model/. Under "
        "`torchrun --nproc_per_node=K` every stage trains with DistributedDataParallel.",
    )  # fmt: skip
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training YAML (default: the demo config)")
    run.add_argument("--data", type=Path, required=True, help="dataset root (simulated into if empty)")
    run.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, metrics, report, model")
    run.add_argument(
        "--resume",
        action="store_true",
        help="skip the stages whose checkpoint exists in OUT; continue a stage cut short from its last finished epoch",
    )
    run.add_argument("--device", choices=["cpu", "cuda"], default=None, help="override the config's device")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")

    evaluate = commands.add_parser(
        "evaluate", help="re-score a finished run from its checkpoints (metrics.json, report.md)",
        description="Rebuild the three models of OUT from OUT/config.yaml and OUT/checkpoints, predict the "
        "validation and test folds, and write OUT/metrics.json (bootstrap CIs) and OUT/report.md.",
    )  # fmt: skip
    evaluate.add_argument("--run", type=Path, required=True, metavar="OUT", help="run folder of `ecg-train run`")
    evaluate.add_argument("--device", choices=["cpu", "cuda"], default=None, help="override the config's device")

    calibrate = commands.add_parser(
        "calibrate", help="compare the simulated hospital's baselines with published AUROCs on real ED data",
        description="Simulate a hospital into DATA if it holds none (configs/calibrate.yaml: 20,000 patients, seed 0), "
        "build its calibration cohort (test folds 16-19), train only the ECG-only and the multimodal baselines as "
        "`ecg-train run` does, and print per code the simulated ECG-only test AUROC next to the published one on real "
        "MIMIC-IV-ECG ED data, plus both macro AUROCs against MDS-ED. Writes OUT/simulator_calibration.json and "
        "OUT/simulator_calibration.png.",
    )  # fmt: skip
    calibrate.add_argument("--data", type=Path, required=True, help="simulated hospital (simulated into if empty)")
    calibrate.add_argument(
        "--out", type=Path, required=True, help="folder for checkpoints, simulator_calibration.json and .png"
    )
    calibrate.add_argument("--config", type=Path, default=None, help="recipe YAML (default: configs/calibrate.yaml)")
    calibrate.add_argument("--patients", type=int, default=None, help="override the recipe's patients (a proxy run)")
    calibrate.add_argument("--resume", action="store_true", help="reuse the baselines' checkpoints in OUT")
    calibrate.add_argument("--no-progress", action="store_true", help="hide progress bars")

    study = commands.add_parser(
        "study", help="run a pre-registered multi-seed study grid (resumable) and report it",
        description="Run every cell (arm x config x seed) of a study grid as an `ecg-train run` pipeline in "
        "OUT/cells/ARM/CONFIG/seed-N, one simulated hospital per seed in DATA/seed-N; a rerun skips finished cells "
        "and resumes a killed one from its last finished epoch. Writes OUT/study.json (per-seed table, mean ± sd, "
        "paired test of ours - ECG-only, gap closed, lab macro AUROC, per visibility group, the pre-registered "
        "goals; every variant run so far beside the pre-registered ones) and OUT/study.png (with "
        "OUT/study-variants.png once several variants ran on the primary arm), and prints the tables. With "
        "--report OUT: train nothing; print the tables of the cells complete so far and rewrite those files.",
    )  # fmt: skip
    study.add_argument("--grid", type=Path, default=None, help="study grid YAML (e.g. configs/study.yaml)")
    study.add_argument("--data", type=Path, default=None, help="folder of the simulated hospitals (DATA/seed-N)")
    study.add_argument("--out", type=Path, default=None, help="study folder: cells, study.json, study.png")
    study.add_argument("--configs", default=None, help="comma-separated variants to run, or `all` "
                       "(default: the grid's run_by_default)")  # fmt: skip
    study.add_argument("--arms", default=None, help="comma-separated arms to run (default: every arm of the grid), "
                       "e.g. `full` to run the variants on the primary arm only")  # fmt: skip
    study.add_argument("--max-cells", type=int, default=None, help="train at most this many cells, then stop")
    study.add_argument("--device", choices=["cpu", "cuda"], default=None, help="override the config's device")
    study.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="OUT",
        help="print the tables of a study folder and rewrite its study.json and figures (trains nothing)",
    )
    study.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    export = commands.add_parser(
        "export", help="write the served model (TorchScript + manifest) of a finished run",
        description="Script the ECG-only model of OUT (encoder, diagnosis and lab heads) and write OUT/model/.",
    )  # fmt: skip
    export.add_argument("--run", type=Path, required=True, metavar="OUT", help="run folder of `ecg-train run`")


def _simulate(args: argparse.Namespace) -> int:
    from model_training.simulator.simulate import simulate_hospital

    summary = simulate_hospital(
        args.out,
        n_patients=args.patients,
        seed=args.seed,
        workers=args.workers,
        progress=not args.no_progress,
    )
    print(f"wrote {summary.n_studies} ECG studies of {summary.n_patients} patients to {summary.out_dir}")
    return 0


def _cohort_report(args: argparse.Namespace) -> int:
    from model_training.data.cohort import build_cohort, load_cohort
    from model_training.data.cohort_report import (
        ecg_feature_matrix,
        format_report,
        prevalence_table,
        report_json,
        visibility_table,
    )
    from model_training.data.layout import DataLayout

    layout = DataLayout.from_file(args.layout) if args.layout else DataLayout()
    cohort_dir = args.cohort_dir or args.data_dir / "cohort"
    if args.rebuild or not (cohort_dir / "cohort.json").exists():
        cohort = build_cohort(args.data_dir, cohort_dir, layout=layout, workers=args.workers,
                              progress=not args.no_progress)  # fmt: skip
    else:
        cohort = load_cohort(cohort_dir)
    prevalences = prevalence_table(cohort)
    visibility = visibility_table(cohort, ecg_feature_matrix(cohort), expected=_documented_visibility(args.data_dir))
    text = format_report(cohort, prevalences, visibility)
    (cohort_dir / "report.md").write_text(text)
    (cohort_dir / "report.json").write_text(json.dumps(report_json(prevalences, visibility), indent=2) + "\n")
    print(text)
    return 0


def _documented_visibility(data_dir: Path) -> dict[str, str] | None:
    """The simulator's documented visibility per code when DIR is a simulated hospital; nothing for real data."""
    from model_training.simulator.physiology import documented_visibility
    from model_training.simulator.simulate import COMPLETION_MARKER

    return documented_visibility() if (data_dir / COMPLETION_MARKER).exists() else None


def _plot_examples(args: argparse.Namespace) -> int:
    from model_training.simulator.examples import plot_examples

    for path in plot_examples(args.out, seed=args.seed):
        print(path)
    return 0


def _run(args: argparse.Namespace) -> int:
    from model_training.config import load_config
    from model_training.train.pipeline import run_pipeline

    config = load_config(args.config, {"progress": False} if args.no_progress else None)
    metrics = run_pipeline(config, args.data, args.out, resume=args.resume, device=args.device)
    if metrics is not None:
        print(_headline(metrics))
        print(f"wrote {args.out / 'metrics.json'}, {args.out / 'report.md'} and {args.out / 'model'}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from model_training.train.pipeline import evaluate_run_dir

    print(_headline(evaluate_run_dir(args.run, device=args.device)))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from model_training.config import load_config
    from model_training.simulator_calibration import CALIBRATE_CONFIG, calibrate, format_table, write_outputs

    overrides: dict[str, object] = {"progress": False} if args.no_progress else {}
    if args.patients is not None:
        overrides["data.simulate_patients"] = args.patients
    config = load_config(args.config or CALIBRATE_CONFIG, overrides or None)
    result = calibrate(config, args.data, args.out, resume=args.resume)
    json_path, figure_path = write_outputs(result, args.out)
    print(format_table(result), end="")
    print(f"wrote {json_path} and {figure_path}")
    return 0


def _study(args: argparse.Namespace) -> int:
    from model_training.study.grid import load_grid
    from model_training.study.report import markdown, write_outputs
    from model_training.study.runner import GRID_FILE, run_study, study_report

    if args.report is not None:
        report = study_report(load_grid(args.report / GRID_FILE), args.report)
        written = write_outputs(report, args.report)
        print(markdown(report), end="")
        print("wrote " + ", ".join(str(path) for path in written))
        return 0
    if args.grid is None or args.data is None or args.out is None:
        raise ModelTrainingError("study: give --grid, --data and --out (or --report OUT)")
    grid = load_grid(args.grid)
    configs = None if args.configs is None else tuple(grid.configs) if args.configs == "all" else tuple(
        name.strip() for name in args.configs.split(","))  # fmt: skip
    arms = None if args.arms is None else tuple(name.strip() for name in args.arms.split(","))
    run = run_study(grid, args.data, args.out, configs=configs, arms=arms, max_cells=args.max_cells,
                    device=args.device, progress=not args.no_progress)  # fmt: skip
    report = study_report(grid, args.out)  # the pre-registered variants and every other one run so far
    written = write_outputs(report, args.out)
    print(markdown(report), end="")
    print(f"trained {len(run.trained)} cell(s); {len(run.complete)} of {len(run.cells)} complete")
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


def _export(args: argparse.Namespace) -> int:
    from model_training.train.pipeline import export_run_dir

    print(f"wrote {export_run_dir(args.run)}")
    return 0


def _headline(metrics: dict) -> str:
    dx = metrics["diagnosis"]

    def estimate(e: dict) -> str:
        return f"{e['value']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]" if e["value"] is not None else "n/a"

    lines = [f"diagnosis macro AUROC {name}: {estimate(e)}" for name, e in dx["macro_auroc"].items()]
    lines.append(f"delta ours - ecg_only: {estimate(dx['delta_ours_minus_ecg_only'])}")
    lines.append(f"gap closed: {estimate(dx['gap_closed'])}")
    lines += [f"lab macro AUROC {name}: {estimate(e)}" for name, e in metrics["labs"]["macro_auroc"].items()]
    return "\n".join(lines)


COMMANDS = {"simulate": _simulate, "cohort-report": _cohort_report, "plot-examples": _plot_examples, "run": _run,
            "evaluate": _evaluate, "export": _export, "calibrate": _calibrate, "study": _study}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    # Before torch loads OpenMP: idle worker threads sleep instead of spinning. On a shared 2-core machine spinning
    # threads starve each other (measured: 2.3 s vs 0.29 s per training step under load); an explicit setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return COMMANDS[args.command](args)
    except (ModelTrainingError, IntegrationError) as exc:
        print(f"ecg-train {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""``ecg-train study``: a pre-registered multi-seed study of the three-stage method against its baselines.

A grid file (:mod:`model_training.study.grid`) names a base training configuration, the number of
simulated patients, the seeds, the arms (label fractions and the seeds each runs on) and named
configuration variants. Every (arm, config, seed) is a *cell*: one ``ecg-train run`` pipeline.
:mod:`model_training.study.runner` runs the cells resumably, :mod:`model_training.study.analysis`
turns their metrics into per-seed tables, means ± sd, paired tests and the pre-registered goals
(pure functions), and :mod:`model_training.study.report` writes ``study.json``, ``study.png`` and
the markdown table::

    DATA/seed-N/                      one simulated hospital per seed (and its cohort), shared by its cells
    OUT/grid.yaml                     the grid the study last ran with (``--report`` reads it)
    OUT/cells/ARM/CONFIG/seed-N/      the cell's run folder (checkpoints, metrics.json, report, model)
    OUT/cells/ARM/CONFIG/seed-N/cell.json   written last: the cell is complete
    OUT/study.json, OUT/study.png
"""

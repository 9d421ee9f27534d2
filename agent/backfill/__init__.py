"""``ecg-agent backfill``: score an archive (years of ECGs) on a Dask cluster, through the nightly run's code.

- :mod:`agent.backfill.archive`: the archive (WFDB tree, FHIR Bulk Data NDJSON, HL7 v2 dump) as partitions,
  and a partition's files as the items a run takes, with the study keys the nightly sources give;
- :mod:`agent.backfill.worker`: one partition on a worker: the pinned model verified, batches through
  :func:`agent.batch.process_batch` (same store, same outbox, idempotent), recorded done after commit;
- :mod:`agent.backfill.client`: the cluster (LocalCluster on loopback, or an existing scheduler), the
  progress bar, failures recorded, resumable by name.
"""

"""``ecg-agent serve``: run the batch on a cron schedule with APScheduler 3.x.

The job lives in the agent's own database (SQLAlchemyJobStore), so a restart keeps
its next run time, and the APScheduler defaults that matter are set on purpose:

- ``coalesce``: nights missed while the machine was down run once, not once each;
- ``max_instances=1``: a run still going when the next fires is not doubled (the
  database lock also stops a second *process*);
- ``misfire_grace_time``: a night missed by less than this still runs when the
  agent comes back.

The job is referenced by its import path with plain arguments (the job store pickles
it), and rebuilds the settings itself each time, so a promoted model or an edited
config takes effect at the next run without a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from agent.crontab import crontab_trigger
from agent.settings import AgentSettings

log = logging.getLogger(__name__)

JOB_ID = "ecg-agent-nightly-run"
JOB_FUNCTION = "agent.jobs:scheduled_run"
JOBS_TABLE = "apscheduler_jobs"


def nightly_trigger(settings: AgentSettings) -> CronTrigger:
    return crontab_trigger(settings.schedule.cron, settings.schedule.timezone)


def build_scheduler(
    settings: AgentSettings,
    *,
    config_file: Path | None,
    secrets_dir: Path | None,
    scheduler_class: Callable[..., BaseScheduler] = BlockingScheduler,
) -> BaseScheduler:
    """A scheduler holding the one nightly job; ``start()`` it to serve."""
    jobstore = SQLAlchemyJobStore(url=settings.database_url.get_secret_value(), tablename=JOBS_TABLE)
    scheduler = scheduler_class(
        jobstores={"default": jobstore},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": settings.schedule.misfire_grace_time_s,
        },
        timezone=settings.schedule.timezone,
    )
    scheduler.add_job(
        JOB_FUNCTION,
        trigger=nightly_trigger(settings),
        id=JOB_ID,
        name="nightly ECG scoring run",
        kwargs=_job_kwargs(config_file, secrets_dir),
        replace_existing=True,  # an edited schedule replaces the stored one
    )
    return scheduler


def _job_kwargs(config_file: Path | None, secrets_dir: Path | None) -> dict[str, Any]:
    # Plain strings: the job store pickles the arguments, and paths must survive a restart.
    return {
        "config_file": str(config_file) if config_file else None,
        "secrets_dir": str(secrets_dir) if secrets_dir else None,
    }

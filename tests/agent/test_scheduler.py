"""serve: one nightly job in the agent's database, coalesced, never doubled, catching up a missed night once."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.schedulers.background import BackgroundScheduler

from agent.crontab import crontab_trigger
from agent.scheduler import JOB_FUNCTION, JOB_ID, build_scheduler
from agent.settings import load_settings


def _settings(tmp_path, **schedule):
    return load_settings(database_url=f"sqlite:///{tmp_path / 'agent.db'}", schedule=schedule)


def test_the_nightly_job_runs_at_02_00_hospital_time_by_default(tmp_path):
    scheduler = build_scheduler(
        _settings(tmp_path, timezone="Europe/Berlin"), config_file=None, secrets_dir=None,
        scheduler_class=BackgroundScheduler,
    )  # fmt: skip
    scheduler.start(paused=True)
    try:
        job = scheduler.get_job(JOB_ID)
        next_run = job.next_run_time.astimezone(ZoneInfo("Europe/Berlin"))
        assert (next_run.hour, next_run.minute) == (2, 0)
        assert next_run > datetime.now(ZoneInfo("Europe/Berlin"))
    finally:
        scheduler.shutdown(wait=False)


def test_the_job_is_coalesced_single_instance_with_a_grace_time_and_stored_by_import_path(tmp_path):
    settings = _settings(tmp_path, cron="30 3 * * 1-5", misfire_grace_time_s=600)
    config = tmp_path / "agent.toml"
    scheduler = build_scheduler(settings, config_file=config, secrets_dir=None, scheduler_class=BackgroundScheduler)
    scheduler.start(paused=True)
    try:
        job = scheduler.get_job(JOB_ID)
        assert job.coalesce and job.max_instances == 1 and job.misfire_grace_time == 600
        assert job.func_ref == JOB_FUNCTION and job.kwargs == {"config_file": str(config), "secrets_dir": None}
        assert str(job.trigger) == "cron[month='*', day='*', day_of_week='mon-fri', hour='3', minute='30']"

    finally:
        scheduler.shutdown(wait=False)


def test_crontab_weekday_numbers_mean_what_they_mean_in_crontab():
    # APScheduler 3 counts weekdays from Monday = 0; a crontab line counts from Sunday = 0.
    trigger = crontab_trigger("30 3 * * 1-5", "UTC")
    fire, fired_on = datetime(2026, 11, 22, tzinfo=UTC), []  # a Sunday
    for _ in range(7):
        fire = trigger.get_next_fire_time(None, fire + timedelta(minutes=1))
        fired_on.append(fire.strftime("%a"))
    assert fired_on == ["Mon", "Tue", "Wed", "Thu", "Fri", "Mon", "Tue"]
    assert "day_of_week='sun'" in str(crontab_trigger("0 2 * * 0", "UTC"))
    assert "day_of_week='sun'" in str(crontab_trigger("0 2 * * 7", "UTC"))
    assert "day_of_week='*/2'" in str(crontab_trigger("0 2 * * */2", "UTC"))


def test_restarting_with_an_edited_schedule_replaces_the_stored_job(tmp_path):
    for cron in ("0 2 * * *", "15 4 * * *"):
        scheduler = build_scheduler(
            _settings(tmp_path, cron=cron), config_file=None, secrets_dir=None, scheduler_class=BackgroundScheduler
        )
        scheduler.start(paused=True)
        jobs = scheduler.get_jobs()
        scheduler.shutdown(wait=False)
    assert len(jobs) == 1 and "hour='4', minute='15'" in str(jobs[0].trigger)

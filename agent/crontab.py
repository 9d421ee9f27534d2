"""Standard crontab lines for APScheduler 3.x, weekday numbers included."""

from __future__ import annotations

import re

from apscheduler.triggers.cron import CronTrigger

_CRON_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def crontab_trigger(expr: str, timezone: str) -> CronTrigger:
    """A CronTrigger from a standard crontab line, with crontab's weekday numbers (0 and 7 = Sunday).

    APScheduler 3.x numbers weekdays from Monday = 0 (its issue 286), so ``* * * * 1-5``
    passed straight through would run Tuesday to Saturday. Numbers are turned into
    names first, which both agree on.
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"a crontab line has 5 fields (minute hour day month weekday), got {len(fields)}")
    minute, hour, day, month, weekday = fields
    return CronTrigger(
        minute=minute, hour=hour, day=day, month=month, day_of_week=_weekday_names(weekday), timezone=timezone
    )


def _weekday_names(field: str) -> str:
    return re.sub(r"(?<![/\w])([0-7])(?![\w])", lambda m: _CRON_WEEKDAYS[int(m.group(1))], field)

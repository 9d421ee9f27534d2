"""Jobs the scheduler runs, referenced by import path with plain arguments (the job store pickles them)."""

from __future__ import annotations

import logging
from pathlib import Path

from agent.service import AgentService
from agent.settings import load_settings

log = logging.getLogger(__name__)

#: One service per process, so a model that passed verification keeps serving if its replacement is refused.
_services: dict[str, AgentService] = {}


def scheduled_run(config_file: str | None, secrets_dir: str | None) -> None:
    """The nightly run: settings are rebuilt each time, so config edits and promotes apply without a restart."""
    settings = load_settings(Path(config_file) if config_file else None,
                             secrets_dir=Path(secrets_dir) if secrets_dir else None)  # fmt: skip
    key = settings.database_url.get_secret_value()
    service = _services.get(key)
    if service is None or service.settings != settings:
        service = _services[key] = AgentService(settings, loader=service.loader if service else None)
    outcome = service.run_once(progress=False)
    log.info("scheduled run finished: %s", outcome.summary())

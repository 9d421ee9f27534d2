"""The long-running modes: ``serve`` (scheduler, plus the MLLP listener when enabled) and ``listen``."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path

from agent.scheduler import build_scheduler
from agent.service import listener_ssl_context
from agent.settings import AgentSettings
from integrations.hl7.listener import MllpListener, MllpListenerConfig
from integrations.store import Store

log = logging.getLogger(__name__)


def listen(settings: AgentSettings) -> None:
    """Run the MLLP listener in the foreground until SIGTERM or SIGINT."""
    asyncio.run(_listen_until_stopped(settings, threading.Event()))


def serve(settings: AgentSettings, *, config_file: Path | None, secrets_dir: Path | None) -> None:
    """Run the nightly schedule in the foreground; the listener runs beside it in a thread when enabled."""
    scheduler = build_scheduler(settings, config_file=config_file, secrets_dir=secrets_dir)
    stop = threading.Event()
    listener_thread = None
    if settings.sources.hl7.enabled:
        listener_thread = threading.Thread(
            target=lambda: asyncio.run(_listen_until_stopped(settings, stop, install_signals=False)),
            name="mllp-listener",
        )
        listener_thread.start()
    stopping = threading.Event()

    def _stop(*_: object) -> None:
        # Only a flag here: the scheduler may not be running yet when the signal lands.
        stopping.set()
        if scheduler.running:
            scheduler.shutdown(wait=False)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop)
    for job in scheduler.get_jobs():
        log.info("serving: next run %s (%s)", job.trigger.get_next_fire_time(None, datetime.now(UTC)), job.name)
    try:
        if not stopping.is_set():
            scheduler.start()  # blocks until shutdown
    finally:
        stop.set()
        if listener_thread is not None:
            listener_thread.join()


async def _listen_until_stopped(
    settings: AgentSettings, stop: threading.Event, *, install_signals: bool = True
) -> None:
    inbox = settings.sources.hl7
    store = Store.from_url(settings.database_url.get_secret_value())
    store.upgrade()
    config = MllpListenerConfig(
        host=inbox.host, port=inbox.port, max_message_bytes=inbox.max_message_bytes,
        idle_timeout_s=inbox.idle_timeout_s, max_connections=inbox.max_connections,
        allow_plaintext=inbox.allow_plaintext, ssl_context=listener_ssl_context(inbox.tls),
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    if install_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopped.set)
    async with MllpListener(store, config) as listener:
        log.info("MLLP listener on %s:%d", *listener.address)
        while not stopped.is_set() and not stop.is_set():
            try:
                await asyncio.wait_for(stopped.wait(), timeout=0.5)
            except TimeoutError:
                continue
    store.dispose()

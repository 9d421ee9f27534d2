"""HL7 in, HL7 out, in-process: ORU^R01s sent over MLLP to our listener come back as results ORU^R01s to an
independent receiver (python-hl7's asyncio MLLP server), one per ECG, idempotent across runs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import hl7
import pytest
from hl7.mllp import HL7StreamReader, HL7StreamWriter, start_hl7_server

from agent.registry import ModelRegistry
from agent.service import EXIT_OK, AgentService
from integrations.store import Store

from .conftest import Hl7Feed, ecg, settings_for

pytestmark = pytest.mark.slow


@dataclass
class Receiver:
    """python-hl7's MLLP server in a thread, answering every message with its own AA."""

    port: int = 0
    received: list[hl7.Message] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    peer, loop = Receiver(), asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def answer(reader: HL7StreamReader, writer: HL7StreamWriter) -> None:
        try:
            while True:
                message = await reader.readmessage()
                peer.received.append(message)
                writer.writeblock(str(message.create_ack(ack_code="AA", message_id="RECEIVER-ACK")).encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = asyncio.run_coroutine_threadsafe(start_hl7_server(answer, "127.0.0.1", 0), loop).result(10)
    peer.port = server.sockets[0].getsockname()[1]
    yield peer

    async def shut_down() -> None:
        server.close()
        await server.wait_closed()

    asyncio.run_coroutine_threadsafe(shut_down(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_hl7_ecgs_come_back_as_results_to_the_receiver_once_each(tmp_path, receiver, all_positive_artifact):
    feed = Hl7Feed(tmp_path / "in")
    sink = f'[sinks.hl7]\nenabled = true\nhost = "127.0.0.1"\nport = {receiver.port}\nack_timeout_s = 10\n'
    feed.settings = settings_for(tmp_path, feed.section + sink)
    store = Store.from_url(feed.settings.database_url.get_secret_value())
    store.upgrade()
    registry = ModelRegistry(store, feed.settings.registry_dir, actor="test")
    registry.register(all_positive_artifact)
    registry.promote("1.0.0", reason="round trip")
    for index in range(3):
        feed.deliver(f"cart-{index}", ecg(index), time_text="20261120031400")

    first = AgentService(feed.settings).run_once(progress=False)
    second = AgentService(feed.settings).run_once(progress=False)

    assert first.exit_code == second.exit_code == EXIT_OK, first.message + second.message
    assert first.report.counts["written_back"] == 3 and second.report.counts["written_back"] == 0
    assert len(receiver.received) == 3
    for message in receiver.received:
        assert str(message.segment("MSH")[9]).startswith("ORU^R01")
        results = [obx for obx in message.segments("OBX") if str(obx[2]) == "CWE"]
        assert results and all(str(obx[11]) in ("P", "F") for obx in results)
    assert len({str(m.segment("MSH")[10]) for m in receiver.received}) == 3  # one deterministic MSH-10 per ECG
    store.dispose()

"""MLLP ingest throughput and ACK latency: prints one JSON object.

    .venv/bin/python bench/mllp.py [--messages 600] [--connections 4]

Our listener runs in its own process in front of a SQLite (WAL) store; senders on
``--connections`` loopback connections each send 12-lead, 10 s, 500 Hz ORU^R01 messages and
wait for the ACK before the next one. Every ACK is sent only after the message is committed.
Reports messages per second and ACK latency percentiles (send start → ACK received), and,
measured in this process, the per-message cost of the receipt check (the scan) and of the
full decode with its numpy fast path for the samples. Goal: ≥ 100 msg/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from integrations.ecg import MODEL_LEAD_ORDER, EcgRecord
from integrations.hl7 import MllpListener, MllpListenerConfig, decode_ecg_oru, encode_ecg_oru, scan_ecg_oru
from integrations.hl7.mllp import END_BLOCK, frame
from integrations.hl7.waveform import decode_numeric_array
from integrations.store import InboxStatus, Store

LOOPBACK = "127.0.0.1"
FS_HZ = 500.0
DURATION_S = 10.0
CONTROL_ID_TEMPLATE = "BENCH-{:012d}"
GOAL_MSG_PER_S = 100


def template_message() -> bytes:
    rng = np.random.default_rng(0)
    n_samples = round(FS_HZ * DURATION_S)
    # Realistic counts at 5 µV per count: a few hundred to a few thousand, as a 16-bit cart sends.
    signal_mv = np.round(rng.normal(0.0, 0.5, size=(len(MODEL_LEAD_ORDER), n_samples)) / 0.005) * 0.005
    record = EcgRecord("BENCH-ECG", signal_mv, FS_HZ, MODEL_LEAD_ORDER, subject_id="BENCH-PATIENT")
    return encode_ecg_oru(record, control_id=CONTROL_ID_TEMPLATE.format(0), resolution_uv=5.0)


def decode_costs_ms(message: bytes, repeats: int = 20) -> dict[str, float]:
    """Median per-message milliseconds: receipt scan, numpy sample decode alone, full decode (hl7apy + numpy)."""
    layout = scan_ecg_oru(message)

    def samples_only() -> None:
        for lead in layout.leads:
            decode_numeric_array(lead.payload)

    costs = {}
    for name, step in (
        ("receipt_scan_ms", lambda: scan_ecg_oru(message)),
        ("fast_path_sample_decode_ms", samples_only),
        ("full_decode_ms", lambda: decode_ecg_oru(message)),
    ):
        timings = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            timings.append((time.perf_counter() - start) * 1000)
        costs[name] = round(statistics.median(timings), 2)
    return costs


def serve(db_url: str, messages: multiprocessing.Queue, stop: multiprocessing.Event) -> None:  # type: ignore[type-arg]
    """The listener process: store, listener, run until ``stop`` is set; reports its port, then its CPU seconds."""

    async def main() -> None:
        store = Store.from_url(db_url)
        store.upgrade()
        async with MllpListener(store, MllpListenerConfig(host=LOOPBACK, port=0)) as listener:
            messages.put(listener.address[1])
            cpu_at_start_s = _cpu_s()
            await asyncio.to_thread(stop.wait)
            messages.put(_cpu_s() - cpu_at_start_s)
        store.dispose()

    asyncio.run(main())


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def send_all(port: int, messages: list[bytes], connections: int) -> list[float]:
    """ACK latencies in seconds; each connection sends its share one message at a time."""
    latencies: list[float] = []

    async def sender(share: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        try:
            for message in share:
                start = time.perf_counter()
                writer.write(frame(message))
                await writer.drain()
                ack = await reader.readuntil(END_BLOCK)
                latencies.append(time.perf_counter() - start)
                if b"MSA|AA|" not in ack:
                    raise RuntimeError(f"not accepted: {ack!r}")
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(sender(messages[i::connections]) for i in range(connections)))
    return latencies


def run_ingest(n_messages: int, connections: int, template: bytes) -> dict[str, float]:
    first_id = CONTROL_ID_TEMPLATE.format(0).encode()
    messages = [template.replace(first_id, CONTROL_ID_TEMPLATE.format(n).encode(), 1) for n in range(1, n_messages + 1)]
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as folder:
        db_url = f"sqlite:///{Path(folder) / 'bench.db'}"
        reports, stop = context.Queue(), context.Event()
        listener = context.Process(target=serve, args=(db_url, reports, stop))
        listener.start()
        try:
            port = reports.get(timeout=60)
            start = time.perf_counter()
            latencies = asyncio.run(send_all(port, messages, connections))
            wall_s = time.perf_counter() - start
        finally:
            stop.set()
        listener_cpu_s = reports.get(timeout=60)
        listener.join(30)
        stored = Store.from_url(db_url)
        rows = stored.count_inbox(InboxStatus.RECEIVED)
        stored.dispose()
    latencies_ms = sorted(latency * 1000 for latency in latencies)
    return {
        "messages": n_messages,
        "stored_rows": int(rows),
        "connections": connections,
        "wall_s": round(wall_s, 2),
        "msg_per_s": round(n_messages / wall_s, 1),
        "ack_p50_ms": round(latencies_ms[len(latencies_ms) // 2], 1),
        "ack_p99_ms": round(latencies_ms[min(len(latencies_ms) - 1, int(len(latencies_ms) * 0.99))], 1),
        "ack_max_ms": round(latencies_ms[-1], 1),
        # CPU the listener process spent per message: the ceiling on one free core is 1000 / this.
        "listener_cpu_ms_per_msg": round(listener_cpu_s * 1000 / n_messages, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    template = template_message()
    print(
        json.dumps(
            {
                "benchmark": "mllp_ingest",
                "cpu_count": os.cpu_count(),
                "message_bytes": len(template),
                "message": "ORU^R01 v2.5.1, 12 leads x 10 s x 500 Hz, NA OBX per lead",
                "ingest": run_ingest(args.messages, args.connections, template),
                "per_message": decode_costs_ms(template),
                "goal_msg_per_s": GOAL_MSG_PER_S,
                "unix_time": int(time.time()),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

"""The FHIR client against a server slower than its timeout, with and without flow control. Prints JSON.

    .venv/bin/python bench/fhir_slow_server.py [--delay-s 1.0] [--timeout-s 0.2] [--threads 4] [--calls 5]

A threaded HTTP server on 127.0.0.1 answers every POST after ``--delay-s``, whether or not the client
still waits, and counts the requests it holds at once. ``--threads`` senders share one FhirClient (as the
write-back does) and each sends ``--calls`` transactions. Compared: the client's flow control (adaptive
limit, hold of abandoned requests, circuit breaker) against the same retries with it switched off
(limit 64, no hold, no breaker). ``peak_at_server`` is the most requests the server held at once.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from integrations.fhir import FhirClient, FhirConfig, FhirUnavailableError, FlowPolicy, RetryPolicy

BODY = json.dumps({"resourceType": "Bundle", "type": "transaction-response", "entry": []}).encode()


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, delay_s: float) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.held = self.peak = self.requests = 0

    def handle_error(self, *_args: object) -> None:
        pass  # writing to a client that gave up


class Handler(BaseHTTPRequestHandler):
    server: Server

    def do_POST(self) -> None:
        with self.server.lock:
            self.server.requests += 1
            self.server.held += 1
            self.server.peak = max(self.server.peak, self.server.held)
        try:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            time.sleep(self.server.delay_s)
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        finally:
            with self.server.lock:
                self.server.held -= 1

    def log_message(self, *_args: object) -> None:
        pass


def measure(flow: FlowPolicy, args: argparse.Namespace) -> dict[str, object]:
    server = Server(args.delay_s)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    retry = RetryPolicy(max_attempts=4, base_delay_s=0.05, max_delay_s=0.5, budget_s=30.0)
    config = FhirConfig(base_url=f"http://127.0.0.1:{server.server_address[1]}/fhir", timeout_s=args.timeout_s,
                        retry=retry, flow=flow)  # fmt: skip
    outcomes: Counter[str] = Counter()
    started_s = time.monotonic()
    with FhirClient(config) as client:
        senders = [threading.Thread(target=_send, args=(client, args.calls, outcomes)) for _ in range(args.threads)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
    wall_s = time.monotonic() - started_s
    time.sleep(args.delay_s)  # let the server finish what it still holds before it is counted out
    server.shutdown()
    server.server_close()
    return {"peak_at_server": server.peak, "requests_at_server": server.requests, "outcomes": dict(outcomes),
            "wall_s": round(wall_s, 2)}  # fmt: skip


def _send(client: FhirClient, calls: int, outcomes: Counter[str]) -> None:
    for _ in range(calls):
        try:
            client.transaction({"resourceType": "Bundle", "type": "transaction", "entry": []})
            outcomes["ok"] += 1
        except FhirUnavailableError as exc:
            outcomes[type(exc).__name__] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-s", type=float, default=1.0)
    parser.add_argument("--timeout-s", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    with_flow = FlowPolicy(
        max_concurrent_requests=args.threads, breaker_cooldown_s=5.0, abandoned_hold_s=2 * args.delay_s
    )
    without = FlowPolicy(max_concurrent_requests=64, breaker_failures=1_000_000, abandoned_hold_s=0.0)
    print(json.dumps({"setup": vars(args), "flow_control": measure(with_flow, args),
                      "no_flow_control": measure(without, args)}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()

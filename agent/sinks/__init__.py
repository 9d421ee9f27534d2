"""Where results go back to: one module per sink, behind one small protocol.

A sink turns a stored :class:`~agent.sinks.payload.ResultPayload` back into its system's
resources, with codes from the manifest of the model version that produced it, and must be
idempotent: after a crash the same payload is sent again and must change nothing.

- :mod:`agent.sinks.fhir`: FHIR R4 Observations (conditional creates on deterministic identifiers);
- :mod:`agent.sinks.hl7`: ORU^R01 over MLLP (a deterministic MSH-10).

Both write only what reaches the chart (charted labels, with their notes: :mod:`agent.sinks.charting`)
and let a corrected ECG supersede its earlier results (:mod:`agent.sinks.corrections`).
"""

from __future__ import annotations

from typing import Protocol

from agent.sinks.payload import ResultPayload
from integrations.store import StoredStudy


class ResultSink(Protocol):
    """Where results go back to: FHIR Observations, HL7 ORU^R01."""

    destination: str
    #: Deliveries this sink may have under way at once (worker threads); 1 keeps them in order.
    max_in_flight: int
    #: The sources whose results this sink carries, as its module's ``sources_carried`` / ``SOURCES_CARRIED``
    #: says for its settings (what ``config check`` and ``status`` report, see :mod:`agent.routing`).
    carries: frozenset[str]

    def accepts(self, study: StoredStudy) -> bool:
        """Whether results for ``study`` go to this destination: its source is one this sink ``carries``."""
        ...

    def send(self, payload: ResultPayload) -> None:
        """Deliver one study's results; must be idempotent (a retry after a crash sends the same payload).

        Called from worker threads, up to ``max_in_flight`` at once.
        """
        ...

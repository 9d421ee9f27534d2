"""Which enabled sink carries which enabled source's results, worked out from the settings alone.

Each sink says what it can carry (:func:`agent.sinks.fhir.sources_carried`,
:data:`agent.sinks.hl7.SOURCES_CARRIED`); this module asks them with the site's settings, for
``config check``, ``status`` and the first lines of ``run-once``, while the run asks the sinks
built from the same settings (``accepts``). A source whose results no enabled sink carries is
legal (results stay in SQL) but rarely meant, so it is said plainly.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.settings import AgentSettings, SinksSettings
from agent.sinks import fhir, hl7
from agent.sources import SOURCE_NAMES

SINK_NAMES = (fhir.FhirResultSink.destination, hl7.Hl7ResultSink.destination)


@dataclass(frozen=True, slots=True)
class SourceRoute:
    """An enabled source, the enabled sinks its results go to, and the disabled ones that would carry them."""

    source: str
    sinks: tuple[str, ...]
    would_carry: tuple[str, ...]

    def describe(self) -> str:
        if self.sinks:
            return f"sources.{self.source}: results go to {', '.join(f'sinks.{s}' for s in self.sinks)} and SQL"
        hint = f"; enable {' or '.join(f'sinks.{s}' for s in self.would_carry)}" if self.would_carry else ""
        return (f"sources.{self.source}: results are stored in SQL only — no enabled sink carries "
                f"{self.source.upper()}-sourced results{hint}")  # fmt: skip


def sink_carries(sinks: SinksSettings) -> dict[str, frozenset[str]]:
    """Every sink, enabled or not → the sources whose results it carries with these settings."""
    return {
        fhir.FhirResultSink.destination: fhir.sources_carried(hl7_patient_lookup=sinks.fhir.hl7_patient_lookup),
        hl7.Hl7ResultSink.destination: hl7.SOURCES_CARRIED,
    }


def source_routes(settings: AgentSettings) -> list[SourceRoute]:
    """Where each enabled source's results go."""
    carries = sink_carries(settings.sinks)
    enabled = {name: getattr(settings.sinks, name).enabled for name in SINK_NAMES}
    routes = []
    for source in SOURCE_NAMES:
        if not getattr(settings.sources, source).enabled:
            continue
        able = [sink for sink in SINK_NAMES if source in carries[sink]]
        routes.append(
            SourceRoute(source, tuple(s for s in able if enabled[s]), tuple(s for s in able if not enabled[s]))
        )
    return routes


def unrouted(settings: AgentSettings) -> list[SourceRoute]:
    """The enabled sources whose results no enabled sink carries."""
    return [route for route in source_routes(settings) if not route.sinks]

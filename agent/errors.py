"""The exception tree of :mod:`agent`.

Errors from :mod:`integrations` and from the artifact loader keep their own types; these
are the agent's own failures, each naming what it is about::

    AgentError
    ├── ConfigError          the settings cannot be built (file, variable or value named)
    ├── RegistryError        a model version cannot be registered, found or moved (version and reason named)
    ├── UnknownModelVersionError  (agent.sinks.manifests) a payload's model version or code is not registered
    ├── PatientLookupError   (agent.sinks.patients) an HL7 patient identifier has no FHIR system here, or
    │                        matches no Patient, or several: that one write-back fails and is retried later
    └── BackfillError        a backfill partition that cannot be scored at all (refused model, another
                             database), or a backfill that cannot start (no active model, SQLite on a cluster)
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error raised by :mod:`agent`."""


class ConfigError(AgentError, ValueError):
    """The agent's settings are missing, unreadable or invalid."""


class RegistryError(AgentError):
    """A model registry operation was refused; the message names the version and the reason."""


class BackfillError(AgentError):
    """A backfill, or one partition of it, cannot go on; the message says why (and the partition's row keeps it)."""

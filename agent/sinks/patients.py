"""The FHIR Patient of an ECG that reached us as HL7 v2: PID-3 → ``GET Patient?identifier=system|value``.

An HL7 message names the patient by an id and the authority that assigned it (PID-3, see
:mod:`integrations.hl7.patient`); FHIR names a register by a URI (``Identifier.system``). An
authority sent with an ISO OID maps by itself (``urn:oid:<oid>``), one sent as a URI is its own
system; any other is mapped by the site (by its namespace id or universal id). A PID-3 without
any authority is looked up only where the site names the one system such ids belong to: an
unmapped authority is never guessed, since a wrong system can match another register's
patient with the same number.

Every failure here belongs to one message (:class:`PatientLookupError`): the delivery layer
counts it and retries it on later runs (the patient may be registered later), and parks it
after the store's maximum attempts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.errors import AgentError
from integrations.fhir.client import FhirClient
from integrations.hl7.patient import PatientIdentifier

#: An ISO object identifier: ``urn:oid:`` needs the dotted-decimal form.
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
#: Characters a token search parameter escapes with a backslash (FHIR search, "Escaping Search Parameters").
_TOKEN_ESCAPES = str.maketrans({"\\": "\\\\", "|": "\\|", ",": "\\,", "$": "\\$"})


class PatientLookupError(AgentError):
    """An HL7 patient identifier has no FHIR identifier system here, or matches no Patient, or several."""


@dataclass(frozen=True, slots=True)
class PatientIdentifierSystems:
    """How PID-3's assigning authority becomes a FHIR ``Identifier.system`` at this site."""

    #: Assigning authority (HD namespace id, or its universal id) → system URI.
    by_authority: Mapping[str, str] = field(default_factory=dict)
    #: The system of a PID-3 sent without any assigning authority; None: such an id is not looked up.
    without_authority: str | None = None

    def system_for(self, identifier: PatientIdentifier) -> str:
        """The identifier's FHIR system, or :class:`PatientLookupError` saying which setting is missing."""
        for name in (identifier.authority, identifier.authority_id):
            if name and name in self.by_authority:
                return self.by_authority[name]
        if identifier.authority_id_type == "ISO" and _OID.fullmatch(identifier.authority_id):
            return f"urn:oid:{identifier.authority_id}"
        if identifier.authority_id_type == "URI" and identifier.authority_id:
            return identifier.authority_id
        if identifier.authority or identifier.authority_id:
            raise PatientLookupError(
                f"patient identifier {identifier}: assigning authority "
                f"{identifier.authority or identifier.authority_id!r} has no FHIR identifier system "
                "(map it in sinks.fhir.patient_identifier_systems)"
            )
        if self.without_authority is None:
            raise PatientLookupError(
                f"patient identifier {identifier} has no assigning authority (PID-3.4), so no FHIR identifier "
                "system (set sinks.fhir.patient_identifier_system_without_authority if all such ids are one register's)"
            )
        return self.without_authority


def find_patient(client: FhirClient, system: str, value: str) -> str:
    """``Patient/<id>`` of the one Patient holding identifier ``system|value``; else :class:`PatientLookupError`."""
    token = f"{system.translate(_TOKEN_ESCAPES)}|{value.translate(_TOKEN_ESCAPES)}"
    first_page = next(client.search_pages("Patient", {"identifier": token, "_count": "2"}))
    ids = [
        str(resource["id"])
        for entry in first_page.get("entry") or ()
        if (resource := entry.get("resource") or {}).get("resourceType") == "Patient" and resource.get("id")
    ]
    where = client.config.base_url
    if not ids:
        raise PatientLookupError(f"patient identifier {system}|{value} matches no Patient on {where}")
    if len(ids) > 1:
        found = ", ".join(f"Patient/{id_}" for id_ in ids)
        raise PatientLookupError(f"patient identifier {system}|{value} matches more than one Patient on {where} "
                                 f"({found}): results are not written to an ambiguous subject")  # fmt: skip
    return f"Patient/{ids[0]}"

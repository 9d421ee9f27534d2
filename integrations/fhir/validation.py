"""Validate every resource we build against FHIR R4 before it leaves (fhir.resources' R4B models).

R4B is wire-compatible with R4 for the resources we write (Observation, Device, Bundle); fhir.resources
8.x defaults to R5, so the R4B package is named explicitly.
"""

from __future__ import annotations

from typing import Any

import pydantic
from fhir.resources.R4B import get_fhir_model_class

from integrations.fhir.errors import FhirResourceInvalidError


def validate_r4(resource: dict[str, Any], resource_name: str) -> None:
    """Raise :class:`FhirResourceInvalidError` naming ``resource_name`` if ``resource`` is not valid R4."""
    resource_type = resource.get("resourceType")
    try:
        model = get_fhir_model_class(str(resource_type))
    except ValueError as exc:
        raise FhirResourceInvalidError(resource_name, f"unknown resourceType {resource_type!r}") from exc
    try:
        model.model_validate(resource)
    except pydantic.ValidationError as exc:
        raise FhirResourceInvalidError(resource_name, str(exc)) from exc

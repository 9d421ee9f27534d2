"""The package's __all__ is honest: every name exists, and every public class or function is listed."""

import inspect

import integrations.fhir as fhir


def test_every_name_in_all_exists():
    assert [name for name in fhir.__all__ if not hasattr(fhir, name)] == []


def test_every_public_class_and_function_imported_into_the_package_is_in_all():
    public = {
        name
        for name, value in vars(fhir).items()
        if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
    }
    assert public - set(fhir.__all__) == set()

"""The package's ``__all__`` is honest: it names every public type a caller needs, and each name resolves."""

import inspect

import integrations.store as store_package
from integrations.store import errors, records


def test_every_name_in_all_resolves():
    assert all(hasattr(store_package, name) for name in store_package.__all__)


def test_every_record_type_and_store_error_is_exported():
    public = {
        name
        for module in (records, errors)
        for name, value in vars(module).items()
        if inspect.isclass(value) and value.__module__ == module.__name__ and not name.startswith("_")
    }
    assert public <= set(store_package.__all__)

"""The package's public surface: ``__all__`` is honest, and every error is an IntegrationError."""

from __future__ import annotations

import integrations.hl7 as hl7_package
from integrations.errors import IntegrationError
from integrations.hl7 import errors


def test_all_names_exactly_the_public_names():
    public = {name for name in vars(hl7_package) if not name.startswith("_")}
    modules = {name for name, value in vars(hl7_package).items() if type(value).__name__ == "module"}
    assert set(hl7_package.__all__) == public - modules
    assert hl7_package.__all__ == sorted(hl7_package.__all__)


def test_every_hl7_error_is_an_integration_error_named_in_the_tree():
    classes = [value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, Exception)]
    own = [cls for cls in classes if cls.__module__ == errors.__name__]
    assert own, "no errors found"
    for cls in own:
        assert issubclass(cls, IntegrationError)
        assert cls.__name__ in errors.__doc__


def test_message_errors_say_which_message_and_why():
    error = errors.EcgWaveformError("MSG-9", "leads of different lengths")
    assert str(error) == "HL7 message 'MSG-9': leads of different lengths"
    assert (error.ack_code, error.error_code) == ("AE", errors.ERR_DATA_TYPE)
    assert errors.UnsupportedMessageError(None, "ADT").ack_code == "AR"


def test_an_ack_timeout_is_also_a_timeout_and_an_os_error():
    timeout = errors.AckTimeoutError("mllp://h:1", "MSG-9", "no ACK within 30 s")
    assert isinstance(timeout, TimeoutError)
    assert isinstance(timeout, OSError)
    assert "MSG-9" in str(timeout)

"""The HL7 v2 / MLLP subtree of :mod:`integrations.errors`.

hl7apy, socket and ssl errors are translated into these at the edge (``raise ... from exc``);
every message names the HL7 message (MSH-10) when there is one, and the reason. A refused message
also carries ``reject_reason``, the prefix a quarantine stores (``malformed``, ``unsupported``,
``missing-leads``, ``invalid-time``), and ``quarantine_reason``, that prefix and the reason::

    IntegrationError
    └── Hl7Error                           anything from integrations.hl7
        ├── Hl7MessageError                a message we cannot accept; carries the ACK code and ERR code
        │   ├── Hl7ParseError              not HL7 v2: no MSH, bad encoding characters         (AR)
        │   ├── UnsupportedMessageError    a message type/version we do not take             (AR)
        │   ├── Hl7StructureError          segments or required fields hl7apy rejects        (AE)
        │   ├── EcgWaveformError           bad waveform content: leads, lengths, rates, NA   (AE)
        │   └── Hl7TimeError               OBR-7 is not an HL7 DTM                           (AE)
        ├── MllpFramingError               a frame without a start block
        │   ├── FrameTooLargeError         a frame longer than the size limit
        │   └── TruncatedFrameError        the peer closed the connection mid-frame
        │       └── StalledFrameError      the peer sent nothing mid-frame for the idle timeout
        ├── MllpIdleTimeoutError           nothing received between frames for the idle timeout (also a TimeoutError)
        ├── PlaintextListenerError         a listener on a non-loopback address without TLS, not explicitly allowed
        ├── MllpConnectionError            cannot connect, send or receive (also an OSError)
        │   └── AckTimeoutError            no ACK within the timeout (also a TimeoutError)
        └── AckError                       the peer's ACK is negative or answers another message
"""

from __future__ import annotations

from integrations.errors import IntegrationError

#: HL7 table 0357 (message error condition codes) entries we send in ERR-3.
ERR_SEGMENT_SEQUENCE = "100"
ERR_REQUIRED_FIELD_MISSING = "101"
ERR_DATA_TYPE = "102"
ERR_UNSUPPORTED_MESSAGE_TYPE = "200"
ERR_UNSUPPORTED_VERSION = "203"
ERR_APPLICATION_INTERNAL = "207"


class Hl7Error(IntegrationError):
    """Base of every HL7 v2 and MLLP error."""


class Hl7MessageError(Hl7Error, ValueError):
    """An HL7 message we cannot accept; ``ack_code`` and ``error_code`` are what its ACK says."""

    ack_code = "AE"
    default_error_code = ERR_APPLICATION_INTERNAL
    default_reject_reason = "malformed"

    def __init__(
        self, control_id: str | None, reason: str, *, error_code: str | None = None, reject_reason: str | None = None
    ) -> None:
        name = f"HL7 message {control_id!r}" if control_id else "HL7 message (no MSH-10)"
        super().__init__(f"{name}: {reason}")
        self.control_id = control_id
        self.reason = reason
        self.error_code = error_code or self.default_error_code
        self.reject_reason = reject_reason or self.default_reject_reason

    @property
    def quarantine_reason(self) -> str:
        """``<reject reason>: <reason>``, e.g. ``invalid-time: OBR-7 '2026-11-20': not an HL7 DTM``."""
        return f"{self.reject_reason}: {self.reason}"


class Hl7ParseError(Hl7MessageError):
    """Not an HL7 v2 message: no MSH segment, or unusable encoding characters (rejected: AR)."""

    ack_code = "AR"
    default_error_code = ERR_SEGMENT_SEQUENCE


class UnsupportedMessageError(Hl7MessageError):
    """A well-formed message of a type or version this receiver does not take (rejected: AR)."""

    ack_code = "AR"
    default_error_code = ERR_UNSUPPORTED_MESSAGE_TYPE
    default_reject_reason = "unsupported"


class Hl7StructureError(Hl7MessageError):
    """An HL7 message whose segments or required fields do not fit its declared structure (AE)."""

    ack_code = "AE"
    default_error_code = ERR_SEGMENT_SEQUENCE


class EcgWaveformError(Hl7MessageError):
    """An ORU^R01 whose waveform cannot be an ECG: bad NA values, missing leads, lengths, rates (AE)."""

    ack_code = "AE"
    default_error_code = ERR_DATA_TYPE


class Hl7TimeError(Hl7MessageError):
    """An ORU^R01 whose acquisition time (OBR-7) is not an HL7 DTM (AE); quarantined as ``invalid-time``."""

    ack_code = "AE"
    default_error_code = ERR_DATA_TYPE
    default_reject_reason = "invalid-time"


class MllpFramingError(Hl7Error):
    """An MLLP frame that cannot be read: larger than the limit, truncated, or missing its start block."""

    def __init__(self, origin: str, reason: str) -> None:
        super().__init__(f"MLLP from {origin}: {reason}")
        self.origin = origin
        self.reason = reason


class FrameTooLargeError(MllpFramingError):
    """A frame passed the size limit before its end block; ``head`` is its first bytes (for MSH-10)."""

    def __init__(self, origin: str, reason: str, *, head: bytes) -> None:
        super().__init__(origin, reason)
        self.head = head


class TruncatedFrameError(MllpFramingError):
    """The peer closed the connection inside a frame; ``partial`` is what had arrived."""

    def __init__(self, origin: str, reason: str, *, partial: bytes) -> None:
        super().__init__(origin, reason)
        self.partial = partial


class StalledFrameError(TruncatedFrameError):
    """The peer started a frame and then sent nothing for the idle timeout; ``partial`` is what had arrived."""


class MllpIdleTimeoutError(Hl7Error, TimeoutError):
    """The peer sent nothing between frames for the idle timeout: the connection is closed, nothing is lost."""

    def __init__(self, origin: str, idle_timeout_s: float) -> None:
        super().__init__(f"MLLP from {origin}: nothing received for {idle_timeout_s:g} s")
        self.origin = origin
        self.idle_timeout_s = idle_timeout_s


class PlaintextListenerError(Hl7Error, ValueError):
    """A listener asked to bind a non-loopback address without TLS, and plaintext was not explicitly allowed."""

    def __init__(self, host: str) -> None:
        super().__init__(
            f"MLLP listener on {host!r} without TLS: HL7 messages carry PHI; configure TLS, bind a loopback "
            "address, or allow plaintext explicitly (behind a TLS-terminating proxy or on an isolated network)"
        )
        self.host = host


class MllpConnectionError(Hl7Error, OSError):
    """Connecting to, sending to or receiving from an MLLP peer failed."""

    def __init__(self, peer: str, control_id: str, reason: str) -> None:
        super().__init__(f"MLLP {peer}, message {control_id!r}: {reason}")
        self.peer = peer
        self.control_id = control_id
        self.reason = reason


class AckTimeoutError(MllpConnectionError, TimeoutError):
    """The peer did not answer with a complete ACK in time."""


class AckError(Hl7Error):
    """The peer's ACK rejects our message (MSA-1 AE/AR) or acknowledges a different one (MSA-2)."""

    def __init__(self, control_id: str, reason: str, *, ack_code: str | None = None) -> None:
        super().__init__(f"HL7 message {control_id!r}: {reason}")
        self.control_id = control_id
        self.reason = reason
        self.ack_code = ack_code

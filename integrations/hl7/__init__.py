"""HL7 v2 for ECGs: ORU^R01 in and out, ACKs, an MLLP listener and client.

* :func:`decode_ecg_oru` / :func:`scan_ecg_oru` read an ECG ORU^R01 (hl7apy for the structure,
  numpy for the waveform); :func:`encode_ecg_oru` writes one.
* :func:`build_results_oru` writes the model's findings as an ORU^R01.
* :class:`MllpListener` receives ORUs into the store's inbox (commit, then ACK);
  :class:`MllpClient` sends a message and checks its ACK.
* Errors are in :mod:`integrations.hl7.errors`.
"""

from integrations.hl7.ack import Ack, build_ack, check_ack, parse_ack
from integrations.hl7.client import MllpClient
from integrations.hl7.ecg_oru import EcgLayout, decode_ecg_oru, scan_ecg_oru
from integrations.hl7.ecg_oru_encoder import encode_ecg_oru
from integrations.hl7.errors import (
    AckError,
    AckTimeoutError,
    EcgWaveformError,
    FrameTooLargeError,
    Hl7Error,
    Hl7MessageError,
    Hl7ParseError,
    Hl7StructureError,
    Hl7TimeError,
    MllpConnectionError,
    MllpFramingError,
    MllpIdleTimeoutError,
    PlaintextListenerError,
    StalledFrameError,
    TruncatedFrameError,
    UnsupportedMessageError,
)
from integrations.hl7.listener import InboxStore, MllpListener, MllpListenerConfig
from integrations.hl7.message import Hl7Party, MessageHeader, read_header
from integrations.hl7.results import EcgResults, Finding, ModelInstance, build_results_oru

__all__ = [
    "Ack",
    "AckError",
    "AckTimeoutError",
    "EcgLayout",
    "EcgResults",
    "EcgWaveformError",
    "Finding",
    "FrameTooLargeError",
    "Hl7Error",
    "Hl7MessageError",
    "Hl7ParseError",
    "Hl7Party",
    "Hl7StructureError",
    "Hl7TimeError",
    "InboxStore",
    "MessageHeader",
    "MllpClient",
    "MllpConnectionError",
    "MllpFramingError",
    "MllpIdleTimeoutError",
    "MllpListener",
    "MllpListenerConfig",
    "ModelInstance",
    "PlaintextListenerError",
    "StalledFrameError",
    "TruncatedFrameError",
    "UnsupportedMessageError",
    "build_ack",
    "build_results_oru",
    "check_ack",
    "decode_ecg_oru",
    "encode_ecg_oru",
    "parse_ack",
    "read_header",
    "scan_ecg_oru",
]

"""Masking secrets in text that leaves the process: log lines, printed settings, error messages.

A password travels inside URLs more often than anywhere else (``postgresql://u:pw@h/db``, a FHIR base
URL with basic-auth userinfo, an OAuth query string), and httpx logs every request URL at INFO. So the
masking works on text, whatever produced it: the user name stays (it says *which* account), the
password and the token values become ``***``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

MASK = "***"
#: ``scheme://user:password@``: the password is whatever lies between the colon and the last-possible ``@``
#: before the host (a password may itself contain ``@`` when a sender forgot to percent-encode it).
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)(?P<password>[^\s/]*)@")
#: Query or form parameters that carry a credential's value.
_SECRET_PARAMETER = re.compile(
    r"(?P<head>\b(?:access_token|client_secret|client_assertion|refresh_token|id_token|password)=)"
    r"(?P<value>[^&\s\"'#]+)",
    re.IGNORECASE,
)


def mask_secrets(text: str) -> str:
    """``text`` with URL passwords and credential parameters replaced by ``***``."""
    masked = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)
    return _SECRET_PARAMETER.sub(lambda m: f"{m['head']}{MASK}", masked)


def holds_secret(text: str) -> bool:
    return mask_secrets(text) != text


def mask_secrets_in(data: Any) -> Any:
    """``data`` (JSON-like: dicts, lists, strings) with every string masked."""
    if isinstance(data, str):
        return mask_secrets(data)
    if isinstance(data, dict):
        return {key: mask_secrets_in(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [mask_secrets_in(value) for value in data]
    return data


class SecretMaskingFilter(logging.Filter):
    """A handler filter that masks secrets in the formatted message and in the traceback text.

    On a handler, not a logger: a logger's filters do not see records propagated from its children
    (``httpx``, ``integrations.fhir.client``...), a root handler's filters see every record it writes.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask_secrets(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        return True


def install_secret_masking(logger: logging.Logger) -> None:
    """Mask secrets in everything ``logger``'s handlers write (once per handler)."""
    for handler in logger.handlers:
        if not any(isinstance(existing, SecretMaskingFilter) for existing in handler.filters):
            handler.addFilter(SecretMaskingFilter())

"""Guarding a search's paging against servers whose ``next`` links never end.

A ``next`` link is opaque, so the client cannot know where a search stands; it can only notice that it
is going round in circles: a link it has already followed (A → B → A), or pages that bring nothing it has
not already read in this search (the same page again under ever-changing URLs). Either way following
on would fetch forever, so the search stops with :class:`PagingLoopError`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx

from integrations.fhir.errors import PagingLoopError

#: Pages in a row that bring no entry unseen in this search before it is taken to be going round in
#: circles. One is tolerated: a server may hand out an empty page before the last, or one whose entries
#: all shifted in from the previous page while resources were updated under an offset-based cursor.
MAX_PAGES_WITHOUT_NEW_ENTRIES = 2


class PagingGuard:
    """Remembers one search's followed links and entries; :meth:`check` before following a ``next`` link."""

    def __init__(self, first_url: str, *, max_pages_without_new_entries: int = MAX_PAGES_WITHOUT_NEW_ENTRIES) -> None:
        self._followed = {normalized_url(first_url)}
        self._entries: set[str] = set()
        self._pages_without_new_entries = 0
        self._max_pages_without_new_entries = max_pages_without_new_entries

    def check(self, page_url: str, bundle: dict[str, Any], next_url: str) -> None:
        """Raise :class:`PagingLoopError` if following ``next_url`` after ``bundle`` would go round in circles."""
        if self._brings_nothing_new(bundle):
            self._pages_without_new_entries += 1
        else:
            self._pages_without_new_entries = 0
        if self._pages_without_new_entries >= self._max_pages_without_new_entries:
            raise PagingLoopError(
                page_url,
                f"{self._pages_without_new_entries} pages in a row brought no entry not already read in this "
                "search, yet the server still offers a next link",
            )
        key = normalized_url(next_url)
        if key in self._followed:
            raise PagingLoopError(page_url, f"its next link {next_url} was already followed in this search")
        self._followed.add(key)

    def _brings_nothing_new(self, bundle: dict[str, Any]) -> bool:
        keys = [entry_key(entry) for entry in bundle.get("entry") or ()]
        new = {key for key in keys if key is not None} - self._entries
        self._entries |= new
        unidentified = any(key is None for key in keys)  # cannot tell, so it counts as new
        return not new and not unidentified


def entry_key(entry: dict[str, Any]) -> str | None:
    """``Type/id/_history/versionId`` of a Bundle entry's resource (its fullUrl without a version), or None."""
    resource = entry.get("resource") or {}
    resource_type, resource_id = resource.get("resourceType"), resource.get("id")
    if resource_type and resource_id:
        version = (resource.get("meta") or {}).get("versionId") or ""
        return f"{resource_type}/{resource_id}/_history/{version}"
    full_url = entry.get("fullUrl")
    return str(full_url) if full_url else None


def normalized_url(url: str) -> str:
    """``url`` with its query parameters sorted and no fragment: the same link however the server orders it."""
    parsed = httpx.URL(url)
    query = urlencode(sorted(parsed.params.multi_items()))
    return str(parsed.copy_with(query=query.encode() or None, fragment=None))

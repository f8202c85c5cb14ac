"""The exceptions of the Worknode SDK: one per exit code of the ``wn`` CLI.

The native module raises these through :func:`_from_native`: the class follows the
CLI's exit code (2 usage, 3 conflict, 4 not found, 5 timeout, 6 permission, 7 full,
8 daemon gone) and ``.code`` is the CLI's stable code name (``already_claimed``,
``node_not_found``, ``lease_expired``, …).
"""

from __future__ import annotations

import json
from typing import Any, Optional


class Error(Exception):
    """A refused or failed Worknode operation.

    Attributes:
        code: the stable code name, as ``wn --json`` reports it (e.g. ``node_not_found``).
        hint: what to do about it (may be empty).
        exit: the exit code ``wn`` would end with for the same failure.
        message: what went wrong.
        details: extra machine-readable detail (candidates of an ambiguous name, …) or None.
    """

    exit_code = 1

    def __init__(self, message: str, code: str = "error", hint: str = "", exit: Optional[int] = None,
                 details: Optional[Any] = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.hint = hint
        self.exit = self.exit_code if exit is None else exit
        self.details = details

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class InvalidInput(Error, ValueError):
    """Bad arguments: a malformed or ambiguous node name, a value out of range (exit 2)."""

    exit_code = 2


class Conflict(Error):
    """Already claimed, an illegal transition, blocked, a reservation overlaps (exit 3)."""

    exit_code = 3


class LeaseExpired(Conflict):
    """The claim is no longer this client's: its lease lapsed (``lease_expired``; once the
    daemon swept the lapsed claim, ``not_claimant``), a later claim fenced it off
    (``stale_epoch``), or background renewal failed (``lease_lost``). Drop the work."""


class NotFound(Error, LookupError):
    """No such segment, node, agent or document (exit 4)."""

    exit_code = 4


class Timeout(Error):
    """Timed out waiting, or an event reader lagged behind the ring (exit 5)."""

    exit_code = 5


class PermissionDenied(Error):
    """Permission denied: a token's rights or subtree, a read-only attach (exit 6)."""

    exit_code = 6


class Full(Error):
    """A capacity is exhausted: nodes, agents, blob arena, a mailbox (exit 7)."""

    exit_code = 7


class DaemonGone(Error):
    """The daemon journaling the segment is gone: the change was refused (exit 8)."""

    exit_code = 8


_BY_EXIT = {2: InvalidInput, 3: Conflict, 4: NotFound, 5: Timeout, 6: PermissionDenied, 7: Full, 8: DaemonGone}
_LEASE_CODES = {"lease_expired", "stale_epoch", "lease_lost", "not_claimant"}


def _from_native(code: str, exit: int, message: str, hint: str, details: Optional[str]) -> Error:
    """Builds the exception for a failure the native module reports (internal)."""
    cls = LeaseExpired if code in _LEASE_CODES else _BY_EXIT.get(exit, Error)
    return cls(message, code=code, hint=hint, exit=exit, details=json.loads(details) if details else None)

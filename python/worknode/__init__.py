"""Worknode from Python: a thin binding over the Rust client library.

Reads are copies straight out of shared memory (no socket, no serialization); blocking
calls (``claim_next(block=…)``, ``events().next(timeout=…)``, ``wait``, ``inbox(wait=…)``)
wait on the segment's futex with the GIL released.

    import worknode
    wn = worknode.connect(agent="worker-1")          # opens a session
    with wn.claim_next(block=30) as claim:           # lease renewed while held
        claim.progress(50, "halfway")
        wn.doc_put(claim.task, "result.md", "done")
        claim.complete("ok")

Names follow the ``wn`` CLI: a node is a UUID, a unique UUID prefix or a ``/path``;
errors are :class:`Error` subclasses carrying the CLI's ``code``, ``hint`` and exit code.
"""

from __future__ import annotations

import os
from typing import Optional

from ._errors import (
    Conflict,
    DaemonGone,
    Error,
    Full,
    InvalidInput,
    LeaseExpired,
    NotFound,
    PermissionDenied,
    Timeout,
)
from ._native import Claim, Client, Event, Events, Node
from ._native import default_segment as _default_segment
from ._aio import AsyncClaim, AsyncClient, AsyncEvents

__all__ = [
    "connect",
    "connect_async",
    "Client",
    "AsyncClient",
    "AsyncClaim",
    "AsyncEvents",
    "Claim",
    "Node",
    "Event",
    "Events",
    "Error",
    "InvalidInput",
    "Conflict",
    "LeaseExpired",
    "NotFound",
    "Timeout",
    "PermissionDenied",
    "Full",
    "DaemonGone",
]


def connect(segment: Optional[str] = None, agent: Optional[str] = None, role: Optional[str] = None,
            token: Optional[str] = None) -> Client:
    """Attaches to a segment and returns a :class:`Client`.

    Args:
        segment: the segment's name; default ``WORKNODE_SEGMENT``, else the per-user default.
        agent: the agent to act as; default ``WORKNODE_AGENT``. An agent client holds a
            session: when this process dies (even by SIGKILL) the daemon releases its
            claims and reservations at once. Without an agent the client reads and adds
            tasks but cannot claim, send mail or reserve.
        role: the agent's role when it first joins (default ``WORKNODE_ROLE``, else ``worker``).
        token: a capability token; default ``WORKNODE_TOKEN``.

    Raises:
        NotFound: no such segment (is ``worknoded`` running?).
        PermissionDenied: the segment belongs to another user and no token was given.
    """
    segment = segment or os.environ.get("WORKNODE_SEGMENT") or _default_segment()
    agent = agent if agent is not None else os.environ.get("WORKNODE_AGENT") or None
    role = role if role is not None else os.environ.get("WORKNODE_ROLE") or None
    token = token if token is not None else os.environ.get("WORKNODE_TOKEN") or None
    return Client(segment, agent, role, token)


async def connect_async(segment: Optional[str] = None, agent: Optional[str] = None, role: Optional[str] = None,
                        token: Optional[str] = None) -> AsyncClient:
    """Like :func:`connect`, off the event loop, returning an :class:`AsyncClient`."""
    import asyncio

    return AsyncClient(await asyncio.to_thread(connect, segment, agent, role, token))

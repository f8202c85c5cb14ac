"""Type stubs of the worknode package."""

from typing import Optional

from ._aio import AsyncClaim as AsyncClaim, AsyncClient as AsyncClient, AsyncEvents as AsyncEvents
from ._errors import (
    Conflict as Conflict,
    DaemonGone as DaemonGone,
    Error as Error,
    Full as Full,
    InvalidInput as InvalidInput,
    LeaseExpired as LeaseExpired,
    NotFound as NotFound,
    PermissionDenied as PermissionDenied,
    Timeout as Timeout,
)
from ._native import Claim as Claim, Client as Client, Event as Event, Events as Events, Node as Node

__all__: list

def connect(segment: Optional[str] = None, agent: Optional[str] = None, role: Optional[str] = None,
            token: Optional[str] = None) -> Client:
    """Attaches to a segment; an agent client holds a session."""

async def connect_async(segment: Optional[str] = None, agent: Optional[str] = None, role: Optional[str] = None,
                        token: Optional[str] = None) -> AsyncClient:
    """Like connect, off the event loop, returning an AsyncClient."""

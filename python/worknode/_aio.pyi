"""Type stubs of the asyncio client (worknode._aio): Client's methods, awaited."""

from types import TracebackType
from typing import Any, AsyncIterator, Dict, List, Optional, Type, Union

from ._native import Claim, Client, Event, Events, Node, _Names, _NodeRef

class AsyncClaim:
    """A Claim with awaitable outcomes; `async with` renews its lease while held."""
    def __init__(self, claim: Claim) -> None: ...
    @property
    def epoch(self) -> int:
        """The fencing epoch this claim was given."""
    @property
    def lease_until_ms(self) -> int:
        """When the lease ends, Unix ms (renewals move it)."""
    @property
    def task(self) -> Node:
        """The claimed task, read now."""
    @property
    def task_id(self) -> str:
        """The task's UUID."""
    @property
    def held(self) -> bool:
        """Whether the claim is still held."""
    @property
    def sync(self) -> Claim:
        """The underlying synchronous Claim."""
    async def progress(self, pct: int, note: Optional[str] = None) -> Node:
        """Reports progress (0 to 100); extends the lease."""
    async def complete(self, note: Optional[str] = None) -> Node:
        """Completes the task; the claim ends."""
    async def fail(self, reason: str) -> Node:
        """Fails the task; the claim ends."""
    async def release(self) -> Node:
        """Gives the task back; the claim ends."""
    async def renew(self, lease: Optional[float] = None) -> None:
        """Renews the lease now."""
    async def __aenter__(self) -> "AsyncClaim": ...
    async def __aexit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                        tb: Optional[TracebackType]) -> bool: ...

class AsyncEvents:
    """An event cursor for `async for`; `await next(timeout=)` returns None on timeout."""
    def __init__(self, events: Events) -> None: ...
    async def next(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event within `timeout` seconds (None: until one comes), or None."""
    def __aiter__(self) -> AsyncIterator[Event]: ...
    async def __anext__(self) -> Event: ...

class AsyncClient:
    """The asyncio client: Client's methods, each awaited off the event loop."""
    def __init__(self, client: Client) -> None: ...
    @property
    def sync(self) -> Client:
        """The underlying synchronous client."""
    @property
    def agent(self) -> Optional[str]:
        """The agent this client acts as, if any."""
    @property
    def segment(self) -> str:
        """The segment's name."""
    async def add_task(self, name: str, parent: str = "/", blocked_by: _Names = (), assignee: _Names = None,
                       priority: int = 0, desc: str = "", kind: str = "task", status: str = "ready") -> Node:
        """Creates a task and returns it."""
    async def show(self, node: _NodeRef) -> Node:
        """The node named by UUID, unique prefix, /path, or a Node to read again."""
    async def ls(self, under: Optional[str] = None, status: Optional[str] = None, label: Optional[str] = None,
                 kind: Optional[str] = None, assignee: Optional[str] = None, limit: int = 1000) -> List[Node]:
        """Nodes matching every filter given."""
    async def ready(self, kind: Optional[str] = None, under: Optional[str] = None, mine: bool = False,
                    label: Optional[str] = None, limit: int = 100) -> List[Node]:
        """Tasks claimable now, best first."""
    async def claim(self, node: _NodeRef, lease: float = 600.0, on_error: str = "fail") -> AsyncClaim:
        """Claims `node` for `lease` seconds."""
    async def claim_next(self, kind: Optional[str] = None, under: Optional[str] = None, mine: bool = False,
                         label: Optional[str] = None, block: Optional[float] = None, lease: float = 600.0,
                         on_error: str = "fail") -> Optional[AsyncClaim]:
        """Claims the best ready task, or None; `block` waits up to that many seconds."""
    async def doc_put(self, node: _NodeRef, name: str, data: Union[bytes, bytearray, str],
                      content_type: Optional[str] = None) -> Node:
        """Stores a document under `node` (through this client's claim on it, if any)."""
    async def doc_get(self, path: _NodeRef) -> bytes:
        """A document's bytes."""
    def events(self, since: Optional[int] = None, kinds: _Names = None,
               node: Optional[_NodeRef] = None) -> AsyncEvents:
        """An event cursor (created at once: it reads from now, or from `since`)."""
    async def wait(self, kinds: _Names = None, node: Optional[_NodeRef] = None, timeout: float = 30.0) -> Event:
        """The first matching event from now; raises Timeout."""
    async def send(self, to: str, text: Union[str, bytes, bytearray], thread: Optional[str] = None) -> str:
        """Sends a message to an agent or @role; returns its id."""
    async def inbox(self, wait: Optional[float] = None, ack: bool = False,
                    include_acked: bool = False) -> List[Dict[str, Any]]:
        """Unread messages (dicts with id, from, to, thread, text, …)."""
    async def reserve(self, paths: _Names, lease: float = 3600.0, shared: bool = False,
                      reason: str = "") -> Dict[str, Any]:
        """Reserves files by glob; returns the reservation."""
    async def unreserve(self, paths: _Names = None) -> int:
        """Withdraws this agent's reservations of these globs (None: all)."""
    async def close(self) -> None:
        """Ends the session."""
    async def __aenter__(self) -> "AsyncClient": ...
    async def __aexit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                        tb: Optional[TracebackType]) -> bool: ...

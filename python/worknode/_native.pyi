"""Type stubs of the extension module (see worknode/__init__.pyi for the package)."""

from types import TracebackType
from typing import Any, Dict, Iterator, List, Optional, Sequence, Type, Union

_Names = Union[str, Sequence[str], None]
_NodeRef = Union[str, "Node"]

class Node:
    """A snapshot of one node, copied out of the segment."""
    @property
    def id(self) -> str:
        """The node's UUID."""
    @property
    def name(self) -> str:
        """Its name."""
    @property
    def kind(self) -> str:
        """Its kind (task, project, document, …)."""
    @property
    def status(self) -> Optional[str]:
        """Its status, or None."""
    @property
    def progress(self) -> int:
        """Progress, 0 to 100."""
    @property
    def priority(self) -> int:
        """Priority, 0 to 255."""
    @property
    def description(self) -> str:
        """Its description (a document's media type)."""
    @property
    def value(self) -> float:
        """Its numeric value."""
    @property
    def version(self) -> int:
        """Its record version."""
    @property
    def epoch(self) -> int:
        """The fencing epoch of its latest claim."""
    @property
    def parent(self) -> Optional[str]:
        """The parent's UUID (None for the root)."""
    @property
    def path(self) -> str:
        """Its path from the root."""
    @property
    def assignees(self) -> List[str]:
        """Agents' names and @roles it is assigned to."""
    @property
    def claim(self) -> Optional[Dict[str, Any]]:
        """The claim on it (agent, agent_slot, epoch, lease_until_ms, live), or None."""
    @property
    def record(self) -> Optional[Dict[str, Any]]:
        """A task's kept history (attempts, claimed_ms, finished_ms, finished_by, note)."""
    def to_dict(self) -> Dict[str, Any]:
        """Every field, as `wn show --json` prints it."""

class Claim:
    """A claim on one task; a context manager renewing its lease while held."""
    @property
    def task(self) -> Node:
        """The claimed task, read now."""
    @property
    def task_id(self) -> str:
        """The task's UUID."""
    @property
    def epoch(self) -> int:
        """The fencing epoch this claim was given."""
    @property
    def lease_until_ms(self) -> int:
        """When the lease ends, Unix ms."""
    @property
    def held(self) -> bool:
        """Whether the claim is still held."""
    def progress(self, pct: int, note: Optional[str] = None) -> Node:
        """Reports progress (0 to 100); extends the lease."""
    def complete(self, note: Optional[str] = None) -> Node:
        """Completes the task; the claim ends."""
    def fail(self, reason: str) -> Node:
        """Fails the task with a short reason; the claim ends."""
    def release(self) -> Node:
        """Gives the task back; the claim ends."""
    def renew(self, lease: Optional[float] = None) -> None:
        """Renews the lease now."""
    def __enter__(self) -> "Claim": ...
    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> bool: ...

class Event:
    """One event, copied out of the ring."""
    @property
    def seq(self) -> int:
        """Its sequence number."""
    @property
    def kind(self) -> str:
        """Its kind's name (or number, for application kinds)."""
    @property
    def node(self) -> Optional[str]:
        """The UUID of the node it is about."""
    @property
    def node_version(self) -> int:
        """The node's version it produced."""
    @property
    def actor(self) -> Optional[str]:
        """The acting agent's name."""
    @property
    def topic(self) -> str:
        """Its topic."""
    @property
    def payload(self) -> bytes:
        """Its inline payload."""
    @property
    def hlc(self) -> int:
        """Its hybrid logical clock stamp."""
    def to_dict(self) -> Dict[str, Any]:
        """Every field, as `wn events --json` prints it."""

class Events:
    """A cursor over the event ring."""
    @property
    def position(self) -> int:
        """The sequence number it reads next."""
    def next(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event within `timeout` seconds (None: until one comes), or None."""
    def __iter__(self) -> Iterator[Event]: ...
    def __next__(self) -> Event: ...

class Client:
    """A connection to a segment (see worknode.connect)."""
    def __init__(self, segment: str, agent: Optional[str] = None, role: Optional[str] = None,
                 token: Optional[str] = None) -> None: ...
    @property
    def segment(self) -> str:
        """The segment's name."""
    @property
    def agent(self) -> Optional[str]:
        """The agent this client acts as."""
    @property
    def watched(self) -> bool:
        """Whether the daemon watches this client's session."""
    def close(self) -> None:
        """Ends the session: the agent leaves, its claims are released."""
    def __enter__(self) -> "Client": ...
    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> bool: ...
    def add_task(self, name: str, parent: str = "/", blocked_by: _Names = (), assignee: _Names = None,
                 priority: int = 0, desc: str = "", kind: str = "task", status: str = "ready") -> Node:
        """Creates a task and returns it."""
    def show(self, node: _NodeRef) -> Node:
        """The node named by UUID, unique prefix, /path, or a Node to read again."""
    def ls(self, under: Optional[str] = None, status: Optional[str] = None, label: Optional[str] = None,
           kind: Optional[str] = None, assignee: Optional[str] = None, limit: int = 1000) -> List[Node]:
        """Nodes matching every filter given."""
    def ready(self, kind: Optional[str] = None, under: Optional[str] = None, mine: bool = False,
              label: Optional[str] = None, limit: int = 100) -> List[Node]:
        """Tasks claimable now, best first."""
    def claim(self, node: _NodeRef, lease: float = 600.0, on_error: str = "fail") -> Claim:
        """Claims `node` for `lease` seconds."""
    def claim_next(self, kind: Optional[str] = None, under: Optional[str] = None, mine: bool = False,
                   label: Optional[str] = None, block: Optional[float] = None, lease: float = 600.0,
                   on_error: str = "fail") -> Optional[Claim]:
        """Claims the best ready task, or None; `block` waits up to that many seconds."""
    def doc_put(self, node: _NodeRef, name: str, data: Union[bytes, bytearray, str],
                content_type: Optional[str] = None) -> Node:
        """Stores a document under `node` (through this client's claim on it, if any)."""
    def doc_get(self, path: _NodeRef) -> bytes:
        """A document's bytes."""
    def events(self, since: Optional[int] = None, kinds: _Names = None,
               node: Optional[_NodeRef] = None) -> Events:
        """An event cursor: from `since` (None: from now), of `kinds`, about `node`."""
    def wait(self, kinds: _Names = None, node: Optional[_NodeRef] = None, timeout: float = 30.0) -> Event:
        """The first matching event from now; raises Timeout."""
    def send(self, to: str, text: Union[str, bytes, bytearray], thread: Optional[str] = None) -> str:
        """Sends a message to an agent or @role; returns its id."""
    def inbox(self, wait: Optional[float] = None, ack: bool = False,
              include_acked: bool = False) -> List[Dict[str, Any]]:
        """Unread messages (dicts with id, from, to, thread, text, …)."""
    def reserve(self, paths: _Names, lease: float = 3600.0, shared: bool = False,
                reason: str = "") -> Dict[str, Any]:
        """Reserves files by glob; returns the reservation."""
    def unreserve(self, paths: _Names = None) -> int:
        """Withdraws this agent's reservations of these globs (None: all)."""

def default_segment() -> str:
    """The default segment name."""

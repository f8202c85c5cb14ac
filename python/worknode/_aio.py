"""The asyncio face of the SDK: the same names as :class:`worknode.Client`, awaited.

Every call runs the synchronous client's method in a worker thread
(``asyncio.to_thread``), where the native code releases the GIL while it waits, so
the event loop never blocks on the segment.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Optional

_WAIT_PIECE = 0.25  # seconds one awaited piece of an unbounded event wait lasts


class AsyncClaim:
    """A :class:`worknode.Claim` with awaitable outcomes; ``async with`` renews its lease."""

    def __init__(self, claim: Any) -> None:
        self._claim = claim

    @property
    def epoch(self) -> int:
        """The fencing epoch this claim was given."""
        return self._claim.epoch

    @property
    def lease_until_ms(self) -> int:
        """When the lease ends, Unix milliseconds (renewals move it)."""
        return self._claim.lease_until_ms

    @property
    def task(self) -> Any:
        """The claimed task (a :class:`worknode.Node`, read now)."""
        return self._claim.task

    @property
    def task_id(self) -> str:
        """The task's UUID."""
        return self._claim.task_id

    @property
    def held(self) -> bool:
        """Whether the claim is still held."""
        return self._claim.held

    @property
    def sync(self) -> Any:
        """The underlying synchronous :class:`worknode.Claim`."""
        return self._claim

    async def progress(self, pct: int, note: Optional[str] = None) -> Any:
        """Reports progress (0 to 100); extends the lease."""
        return await asyncio.to_thread(self._claim.progress, pct, note)

    async def complete(self, note: Optional[str] = None) -> Any:
        """Completes the task; the claim ends."""
        return await asyncio.to_thread(self._claim.complete, note)

    async def fail(self, reason: str) -> Any:
        """Fails the task with a short reason; the claim ends."""
        return await asyncio.to_thread(self._claim.fail, reason)

    async def release(self) -> Any:
        """Gives the task back; the claim ends."""
        return await asyncio.to_thread(self._claim.release)

    async def renew(self, lease: Optional[float] = None) -> None:
        """Renews the lease now."""
        await asyncio.to_thread(self._claim.renew, lease)

    async def __aenter__(self) -> "AsyncClaim":
        self._claim.__enter__()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        return await asyncio.to_thread(self._claim.__exit__, exc_type, exc, tb)

    def __repr__(self) -> str:
        return f"Async{self._claim!r}"


class AsyncEvents:
    """An event cursor for ``async for``; ``await next(timeout=)`` returns None on timeout."""

    def __init__(self, events: Any) -> None:
        self._events = events

    async def next(self, timeout: Optional[float] = None) -> Any:
        """The next event within ``timeout`` seconds (None: until one comes), or None."""
        if timeout is not None:
            return await asyncio.to_thread(self._events.next, timeout)
        while True:
            # Waited in pieces so a cancelled task leaves no thread waiting for long.
            e = await asyncio.to_thread(self._events.next, _WAIT_PIECE)
            if e is not None:
                return e

    def __aiter__(self) -> "AsyncEvents":
        return self

    async def __anext__(self) -> Any:
        return await self.next()


def _off_loop(name: str) -> Any:
    sync = getattr(__import__("worknode._native", fromlist=["Client"]).Client, name)

    @functools.wraps(sync)
    async def call(self: "AsyncClient", *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self._client, name), *args, **kwargs)

    return call


class AsyncClient:
    """The asyncio client: :class:`worknode.Client`'s methods, each awaited off the loop.

    Build one with ``await worknode.connect_async(...)`` or ``AsyncClient(worknode.connect(...))``.
    ``claim`` and ``claim_next`` return :class:`AsyncClaim`; ``events`` returns
    :class:`AsyncEvents`.
    """

    def __init__(self, client: Any) -> None:
        self._client = client

    @property
    def sync(self) -> Any:
        """The underlying synchronous client."""
        return self._client

    @property
    def agent(self) -> Optional[str]:
        """The agent this client acts as, if any."""
        return self._client.agent

    @property
    def segment(self) -> str:
        """The segment's name."""
        return self._client.segment

    add_task = _off_loop("add_task")
    show = _off_loop("show")
    ls = _off_loop("ls")
    ready = _off_loop("ready")
    doc_put = _off_loop("doc_put")
    doc_get = _off_loop("doc_get")
    wait = _off_loop("wait")
    send = _off_loop("send")
    inbox = _off_loop("inbox")
    reserve = _off_loop("reserve")
    unreserve = _off_loop("unreserve")
    close = _off_loop("close")

    async def claim(self, node: Any, lease: float = 600.0, on_error: str = "fail") -> AsyncClaim:
        """Claims ``node``; see :meth:`worknode.Client.claim`."""
        return AsyncClaim(await asyncio.to_thread(self._client.claim, node, lease, on_error))

    async def claim_next(self, kind: Optional[str] = None, under: Optional[str] = None, mine: bool = False,
                         label: Optional[str] = None, block: Optional[float] = None, lease: float = 600.0,
                         on_error: str = "fail") -> Optional[AsyncClaim]:
        """Claims the best ready task, or None; see :meth:`worknode.Client.claim_next`."""
        c = await asyncio.to_thread(self._client.claim_next, kind, under, mine, label, block, lease, on_error)
        return None if c is None else AsyncClaim(c)

    def events(self, since: Optional[int] = None, kinds: Any = None, node: Any = None) -> AsyncEvents:
        """An event cursor (created at once: it reads from now, or from ``since``)."""
        return AsyncEvents(self._client.events(since, kinds, node))

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        await self.close()
        return False

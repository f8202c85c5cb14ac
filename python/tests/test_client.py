"""The client in one process: the API, typed errors, the GIL released while waiting,
lease renewal, and the asyncio client."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import worknode
from worknode.testing import Daemon


def test_task_lifecycle_and_node_fields(client):
    p = client.add_task("proj", kind="project")
    blocker = client.add_task("first", parent="/proj", priority=9)
    t = client.add_task("second", parent=p.id, blocked_by=[blocker.id], assignee="tester", desc="two")
    assert (t.name, t.kind, t.status, t.description, t.assignees) == ("second", "task", "blocked", "two", ["tester"])
    assert t.path == "/proj/second" and t.parent == p.id
    assert client.show("/proj/second") == t
    assert client.show(t.id[:30]).id == t.id
    assert [n.name for n in client.ready(under="/proj")] == ["first"]
    with client.claim_next(under="/proj") as c:
        assert c.task.name == "first" and c.epoch >= 1
        assert client.show(c.task_id).claim["agent"] == "tester"
        c.progress(40, "working")
        assert client.show(c.task_id).progress == 40
        doc = client.doc_put(c.task, "out.json", b'{"ok": true}')
        assert doc.kind == "document" and doc.description == "application/json"
        c.complete("done")
        assert not c.held
    assert client.doc_get("/proj/first/out.json") == b'{"ok": true}'
    assert client.show(t).status == "ready"  # its blocker completed
    d = client.show(t).to_dict()
    assert d["uuid"] == t.id and d["path"] == "/proj/second"
    assert [n.name for n in client.ls(status="complete")] == ["first"]


def test_leaving_with_block_by_exception_fails_or_releases(client):
    client.add_task("a")
    client.add_task("b")
    with pytest.raises(RuntimeError):
        with client.claim("/a") as c:
            raise RuntimeError("disk on fire")
    a = client.show("/a")
    assert a.status == "failed" and a.record["note"]["text"] == "RuntimeError: disk on fire"
    with pytest.raises(KeyError):
        with client.claim("/b", on_error="release"):
            raise KeyError("x")
    assert client.show("/b").status == "ready"
    with client.claim("/b"):
        pass  # no outcome: released on a normal exit
    assert client.show("/b").status == "ready"


def test_lease_is_renewed_in_the_background_while_held(client):
    client.add_task("long")
    with client.claim("/long", lease=1.5) as c:
        first = c.lease_until_ms
        # Renewals come a third of the way into each lease (a second of slack each).
        deadline = time.monotonic() + 30
        while c.lease_until_ms == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.lease_until_ms > first
        time.sleep(3.0)  # two leases long
        c.complete()  # still ours: renewed meanwhile
    assert client.show("/long").status == "complete"


def test_mail_and_reservations(daemon, client):
    other = worknode.connect(daemon.segment, agent="other", role="reviewer")
    try:
        mid = client.send("@reviewer", "please look")
        got = other.inbox(wait=10, ack=True)
        assert [(m["id"], m["text"], m["from"]) for m in got] == [(mid, "please look", "tester")]
        assert other.inbox() == []
        r = client.reserve(["src/**"], reason="refactor")
        assert r["globs"] == ["src/**"]
        with pytest.raises(worknode.Conflict) as e:
            other.reserve("src/lib.rs")
        assert e.value.exit == 3
        assert client.unreserve() == 1
        other.reserve("src/lib.rs")
    finally:
        other.close()


def test_bad_input_raises_the_typed_exceptions(daemon, client):
    with pytest.raises(worknode.InvalidInput) as e:
        client.show("not a node")
    assert (e.value.code, e.value.exit) == ("bad_node_name", 2) and e.value.hint
    with pytest.raises(worknode.NotFound) as e:
        client.show("/no/such/node")
    assert (e.value.code, e.value.exit) == ("node_not_found", 4) and "children of /" in e.value.hint
    with pytest.raises(worknode.NotFound):
        client.show("01234567-89ab-7def-8123-456789abcdef")
    t = client.add_task("t")
    with pytest.raises(worknode.InvalidInput):
        client.ls(status="sleeping")
    with pytest.raises(worknode.InvalidInput):
        client.add_task("x", priority=256)
    with pytest.raises(worknode.InvalidInput):
        client.add_task("bad/name")
    with pytest.raises(worknode.Conflict) as e:
        client.add_task("t")
    assert e.value.code == "name_taken"
    c = client.claim(t, lease=0.05)
    with pytest.raises(worknode.InvalidInput):
        c.progress(101)
    with pytest.raises(worknode.InvalidInput):
        client.claim_next(lease=-1)
    # Held under a long lease, so the check does not race the short one above.
    held = client.claim(client.add_task("held long"), lease=600)
    other = worknode.connect(daemon.segment, agent="rival")
    try:
        with pytest.raises(worknode.Conflict) as e:
            other.claim(held.task)
        assert e.value.code == "already_claimed"
    finally:
        other.close()
        held.release()
    time.sleep(0.2)  # past the 50 ms lease (not renewed: not in a `with` block)
    with pytest.raises(worknode.LeaseExpired) as e:
        c.complete()
    # Lapsed; once the daemon's sweep cleared it, the claim word names nobody.
    assert isinstance(e.value, worknode.Conflict) and e.value.code in ("lease_expired", "not_claimant")
    with pytest.raises(worknode.Timeout) as e:
        client.wait(kinds="task_completed", timeout=0.05)
    assert e.value.exit == 5
    reader = worknode.connect(daemon.segment)
    with pytest.raises(worknode.InvalidInput) as e:
        reader.claim_next()
    assert e.value.code == "agent_required"
    with pytest.raises(worknode.NotFound):
        worknode.connect("no-such-segment-here", agent="x")
    assert all(issubclass(c, worknode.Error) for c in (worknode.InvalidInput, worknode.Conflict, worknode.Full,
                                                      worknode.PermissionDenied, worknode.Timeout))


@pytest.mark.parametrize("call, names", [
    (lambda c, t: c.ls(limit=2**70), "limit"),
    (lambda c, t: c.ls(limit=0), "limit"),
    (lambda c, t: c.ready(limit=-5), "limit"),
    (lambda c, t: c.add_task("p", priority=True), "priority"),
    (lambda c, t: c.add_task("p", priority=2**64), "priority"),
    (lambda c, t: c.add_task("p", priority=1.5), "priority"),
    (lambda c, t: c.add_task("p", blocked_by=5), "blocked_by"),
    (lambda c, t: c.events(since=-1), "since"),
    (lambda c, t: c.events(since="0"), "since"),
    (lambda c, t: c.events(kinds="no_such_kind"), "no_such_kind"),
    (lambda c, t: c.claim(t, lease="10"), "lease"),
    (lambda c, t: c.claim(t, lease=False), "lease"),
    (lambda c, t: c.claim_next(block=float("nan")), "block"),
    (lambda c, t: c.claim_next(block=10**400), "block"),
    (lambda c, t: c.wait(timeout=None), "timeout"),
    (lambda c, t: c.inbox(wait="soon"), "wait"),
    (lambda c, t: c.doc_put(t, "d.txt", 5), "data"),
    (lambda c, t: c.send("someone", ["a"]), "text"),
    (lambda c, t: c.reserve(["src/*"], lease=-1), "lease"),
    (lambda c, t: c.unreserve(7), "paths"),
    (lambda c, t: c.show(42), "node"),
])
def test_out_of_range_and_wrong_types_are_invalid_input_naming_the_argument(client, call, names):
    t = client.add_task("target")
    with pytest.raises(worknode.InvalidInput) as e:
        call(client, t)
    assert names in str(e.value), str(e.value)
    assert e.value.exit == 2
    # Nothing was changed by the refused call.
    assert [n.name for n in client.ls(kind="task")] == ["target"]


def test_a_token_limits_what_its_agent_may_do(daemon, client):
    client.add_task("p", kind="project")
    inside = client.add_task("inside", parent="/p")
    outside = client.add_task("outside")
    token = daemon.mint(rights="read,claim,update", under="/p", agent="bot")
    bot = worknode.connect(daemon.segment, token=token)
    try:
        assert bot.agent == "bot"
        with pytest.raises(worknode.PermissionDenied) as e:
            bot.add_task("new", parent="/p")  # no `create` right
        assert e.value.exit == 6 and e.value.hint
        with pytest.raises(worknode.PermissionDenied):
            bot.claim(outside)  # outside its subtree
        assert client.show(outside).status == "ready"
        with bot.claim(inside) as c:
            c.progress(40)
            c.complete("done by bot")
        assert client.show(inside).status == "complete"
    finally:
        bot.close()


def test_full_segment_raises_full():
    with Daemon(nodes=8, events=64, agents=4, blob_chunks=4) as d:
        c = worknode.connect(d.segment)
        with pytest.raises(worknode.Full) as e:
            for i in range(16):
                c.add_task(f"t{i}")
        assert e.value.exit == 7


def test_a_thread_runs_while_another_waits_in_native_code(client):
    got = {}
    entered = threading.Event()

    def waiter() -> None:
        entered.set()
        got["claim"] = client.claim_next(block=60)

    w = threading.Thread(target=waiter)
    w.start()
    assert entered.wait(timeout=30)
    time.sleep(0.2)  # gives the GIL to the waiter, which goes on into claim_next
    # Nothing is ready, so the waiter sits in claim_next for up to 60 s. Were the GIL
    # held there, this thread would not run again until that wait ended empty: the
    # waiter would be gone (and without a claim) by the time the sum is done.
    busy = sum(i * i for i in range(200_000))
    assert w.is_alive(), "the waiter returned while nothing was ready"
    client.add_task("wake")
    w.join(timeout=90)
    assert not w.is_alive()
    assert busy > 0 and got["claim"] is not None and got["claim"].task.name == "wake"

    events = client.events(kinds="task_completed")
    seen = {}
    r = threading.Thread(target=lambda: seen.setdefault("e", events.next(timeout=60)))
    r.start()
    got["claim"].complete()
    r.join(timeout=90)
    assert seen["e"] is not None and seen["e"].node == got["claim"].task_id


def test_asyncio_client(daemon):
    async def main() -> None:
        async with await worknode.connect_async(daemon.segment, agent="aio") as wn:
            assert isinstance(wn, worknode.AsyncClient)
            ticks = 0
            stop = asyncio.Event()

            async def ticker() -> None:
                nonlocal ticks
                while not stop.is_set():
                    ticks += 1
                    await asyncio.sleep(0.01)

            tick = asyncio.create_task(ticker())
            # Nothing is ready: the loop keeps ticking while claim_next waits off it.
            assert await wn.claim_next(block=0.3) is None
            stop.set()
            await tick
            assert ticks > 1
            await asyncio.gather(*(wn.add_task(f"a{i}") for i in range(5)))
            cursor = wn.events(kinds="task_completed")
            async with await wn.claim_next() as c:
                await c.progress(10)
                await c.complete("async")
            e = await cursor.next(timeout=10)
            assert e is not None and e.node == c.task_id
            names = sorted(n.name for n in await wn.ls(status="ready", kind="task"))
            assert len(names) == 4
            with pytest.raises(worknode.NotFound):
                await wn.show("/nope")

    asyncio.run(asyncio.wait_for(main(), timeout=120))


def test_connect_and_close_in_a_loop_keeps_no_mapping_per_call(daemon, client):
    def mappings() -> int:
        with open("/proc/self/maps") as f:
            return sum(1 for line in f if daemon.segment in line)

    before = mappings()
    for i in range(50):
        c = worknode.connect(daemon.segment, agent=f"short-lived-{i % 3}")
        node = c.show("/")
        cursor = c.events()
        c.close()
        del c, node, cursor
    # `client` (the fixture) keeps its own mapping; the 50 others are gone.
    assert mappings() == before, f"{mappings() - before} mappings left behind"

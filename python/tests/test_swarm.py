"""Real processes: 8 workers racing over 400 tasks, a SIGKILLed worker's claim released,
an event cursor in one process seeing another's changes."""

from __future__ import annotations

import json
import queue
import signal
import threading
import time
from collections import Counter

import worknode

from conftest import finish, first_line, spawn

WORKER = """
import json, sys, worknode
seg, name = sys.argv[1], sys.argv[2]
wn = worknode.connect(seg, agent=name)
print("ready", flush=True)
sys.stdin.readline()  # the start gate: every worker is connected before any claims
done = []
while True:
    c = wn.claim_next(under="/race", lease=60)
    if c is None:
        break
    with c:
        c.progress(50)
        c.complete("ok")
        done.append(c.task_id)
wn.close()
print(json.dumps(done))
"""


def test_eight_workers_claim_each_of_400_tasks_exactly_once(daemon, client):
    client.add_task("race", kind="project")
    ids = {client.add_task(f"t{i}", parent="/race", priority=i % 7).id for i in range(400)}
    workers = [spawn(WORKER, daemon.segment, f"worker-{i}", stdin=True) for i in range(8)]
    for p in workers:
        assert first_line(p) == "ready"
    for p in workers:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [json.loads(finish(p)[-1]) for p in workers]
    done = Counter(t for r in results for t in r)
    assert set(done) == ids
    assert all(n == 1 for n in done.values()), [t for t, n in done.items() if n > 1]
    # A race, not a queue: both CPUs ran workers at once, so more than one got tasks.
    assert sum(1 for r in results if r) >= 2, [len(r) for r in results]
    for node in client.ls(under="/race", kind="task"):
        assert node.status == "complete"
        assert node.record["attempts"] == 1, node


VICTIM = """
import sys, time, worknode
wn = worknode.connect(sys.argv[1], agent="victim")
c = wn.claim(sys.argv[2], lease=3600)
print("claimed", c.epoch, flush=True)
time.sleep(600)
"""


def test_sigkilled_worker_loses_its_claim_at_once(daemon, client):
    task = client.add_task("fragile")
    events = client.events(node=task)
    p = spawn(VICTIM, daemon.segment, task.id)
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in p.stdout], daemon=True).start()
    try:
        line = lines.get(timeout=60)
        assert line.startswith("claimed"), line
        assert client.show(task).status == "claimed"
        assert client.show(task).claim["agent"] == "victim"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    # The lease is an hour: only the session's death notice can release it, and it does
    # within seconds (bounded here at 30 s, far below the lease).
    deadline = time.monotonic() + 30
    seen = []
    while "task_released" not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"not released within 30 s of the SIGKILL; events: {seen}"
        e = events.next(timeout=left)
        if e is not None:
            seen.append(e.kind)
    assert client.show(task).status == "ready", seen
    assert client.claim_next() is not None


LISTENER = """
import sys, worknode
wn = worknode.connect(sys.argv[1])
ev = wn.events(kinds=["node_created", "task_claimed", "task_completed"])
print("listening", flush=True)
for e in ev:
    print(e.kind, e.node, e.actor, flush=True)
    if e.kind == "task_completed":
        break
"""


def test_events_iterator_in_one_process_sees_another_process_change(daemon, client):
    p = spawn(LISTENER, daemon.segment)
    # The child prints it before the changes it must see.
    assert first_line(p, timeout=60) == "listening"
    t = client.add_task("observed")
    with client.claim(t) as c:
        c.complete()
    lines = finish(p, timeout=60)
    assert lines == [f"node_created {t.id} tester", f"task_claimed {t.id} tester", f"task_completed {t.id} tester"]

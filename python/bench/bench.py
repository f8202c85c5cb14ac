"""Python-side latency of Worknode beside redis-py and sqlite3, in one run.

Two operations, each timed call by call with ``time.perf_counter_ns`` (the timer's own
cost is measured and reported, not subtracted):

* ``show``: read one task's record. Worknode: ``Client.show(uuid)`` (and ``show(node)``,
  which skips parsing the UUID). Redis: ``HGETALL task:N``. sqlite3: ``SELECT * … WHERE
  id = ?``.
* ``claim + complete``: take the best ready task and finish it. Worknode:
  ``claim_next()`` then ``claim.complete()``. Redis (a list-based claim, as a Redis work
  queue does it): ``LMOVE ready claimed`` + ``HSET`` claimant, then ``HSET`` status +
  ``LREM claimed`` in one pipeline: three round trips. sqlite3: ``UPDATE … RETURNING``
  (the best ready row) and ``UPDATE`` status, each committed (WAL, synchronous=NORMAL,
  the file on tmpfs like the segment).

Starts its own ``worknoded`` (``$WORKNODE_DAEMON_BIN`` or PATH) and, if ``redis-server``
is on PATH, a private one on a free port (no persistence); without it the Redis rows are
skipped with a note. Writes ``benches/results/python-bench.json``.

    python python/bench/bench.py [--n 20000] [--claim-n 4000] [--out benches/results/python-bench.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional

import worknode
from worknode.testing import Daemon

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def percentiles(samples: List[int]) -> Dict[str, float]:
    s = sorted(samples)

    def at(q: float) -> float:
        return float(s[min(len(s) - 1, int(q * len(s)))])

    return {"n": len(s), "p50_ns": at(0.50), "p90_ns": at(0.90), "p99_ns": at(0.99),
            "mean_ns": sum(s) / len(s), "min_ns": float(s[0])}


def time_each(n: int, op: Callable[[int], object], warmup: int = 1000) -> Dict[str, float]:
    """Times `op(i)` for i in range(n), each call on its own, after a warm-up."""
    for i in range(min(warmup, n)):
        op(i)
    clock = time.perf_counter_ns
    samples = [0] * n
    gc.disable()
    try:
        for i in range(n):
            t0 = clock()
            op(i)
            samples[i] = clock() - t0
    finally:
        gc.enable()
    return percentiles(samples)


def timer_overhead() -> Dict[str, float]:
    return time_each(100_000, lambda i: None)


def machine() -> Dict[str, str]:
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next((l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name")), "")
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpus": str(os.cpu_count()), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform()}


def bench_worknode(n: int, claim_n: int) -> Dict[str, Dict[str, float]]:
    rows: Dict[str, Dict[str, float]] = {}
    with Daemon(nodes=1024, events=1 << 16, agents=16, blob_chunks=16, prefix="bench") as d:
        wn = worknode.connect(d.segment, agent="bench")
        t = wn.add_task("probe", priority=1)
        tid = t.id
        rows["show"] = time_each(n, lambda i: wn.show(tid))
        rows["show_node"] = time_each(n, lambda i: wn.show(t))
        wn.close()
    # claim_next and complete scan every node slot of the pool (see the README): the
    # cycle is timed on worknoded's default pool (16384 slots) and on a small one.
    for row, nodes, count in (("claim_complete", 16384, claim_n), ("claim_complete_pool_1024", 1024, 500)):
        with Daemon(nodes=nodes, events=1 << 16, agents=16, blob_chunks=16, prefix="bench") as d:
            wn = worknode.connect(d.segment, agent="bench")
            for i in range(count + 100):
                wn.add_task(f"t{i}")

            def cycle(i: int) -> None:
                c = wn.claim_next()
                c.complete()

            rows[row] = time_each(count, cycle, warmup=100)
            wn.close()
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_redis(n: int, claim_n: int) -> Optional[Dict[str, Dict[str, float]]]:
    server = shutil.which("redis-server")
    try:
        import redis
    except ImportError:
        return None
    if not server:
        return None
    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 30
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not answer within 30s")
                time.sleep(0.05)
        fields = {"name": "probe", "kind": "task", "status": "ready", "priority": 1, "progress": 0,
                  "description": "", "claimed_by": "", "epoch": 0}
        r.hset("task:probe", mapping=fields)
        rows = {"show": time_each(n, lambda i: r.hgetall("task:probe"))}
        pipe = r.pipeline(transaction=False)
        for i in range(claim_n + 100):
            pipe.hset(f"task:{i}", mapping={**fields, "name": f"t{i}"})
            pipe.rpush("ready", i)
        pipe.execute()

        def cycle(i: int) -> None:
            tid = r.lmove("ready", "claimed", "LEFT", "RIGHT")
            r.hset(f"task:{int(tid)}", mapping={"status": "claimed", "claimed_by": "bench"})
            p = r.pipeline(transaction=False)
            p.hset(f"task:{int(tid)}", "status", "complete")
            p.lrem("claimed", 1, tid)
            p.execute()

        rows["claim_complete"] = time_each(claim_n, cycle, warmup=100)
        return rows
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def bench_sqlite(n: int, claim_n: int) -> Dict[str, Dict[str, float]]:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    tmp = tempfile.mkdtemp(prefix="wn-bench-sqlite-", dir=base)
    try:
        db = sqlite3.connect(os.path.join(tmp, "tasks.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, name TEXT, kind TEXT, status TEXT, priority INT,"
                   " progress INT, description TEXT, claimed_by TEXT, epoch INT)")
        db.execute("CREATE INDEX ready ON tasks (status, priority DESC, id)")
        db.execute("INSERT INTO tasks VALUES (0, 'probe', 'task', 'probe', 1, 0, '', NULL, 0)")
        rows = {"show": time_each(n, lambda i: db.execute("SELECT * FROM tasks WHERE id = ?", (0,)).fetchone())}
        db.execute("BEGIN")
        db.executemany("INSERT INTO tasks VALUES (?, ?, 'task', 'ready', 0, 0, '', NULL, 0)",
                       ((i + 1, f"t{i}") for i in range(claim_n + 100)))
        db.execute("COMMIT")
        claim = ("UPDATE tasks SET status = 'claimed', claimed_by = ?, epoch = epoch + 1 WHERE id = "
                 "(SELECT id FROM tasks WHERE status = 'ready' ORDER BY priority DESC, id LIMIT 1) RETURNING id")

        def cycle(i: int) -> None:
            (tid,) = db.execute(claim, ("bench",)).fetchone()
            db.execute("UPDATE tasks SET status = 'complete' WHERE id = ? AND claimed_by = ?", (tid, "bench"))

        rows["claim_complete"] = time_each(claim_n, cycle, warmup=100)
        db.close()
        return rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="timed show calls per system (default 20000)")
    ap.add_argument("--claim-n", type=int, default=4000, help="timed claim + complete cycles (default 4000)")
    ap.add_argument("--out", default=os.path.join(ROOT, "benches", "results", "python-bench.json"))
    a = ap.parse_args()
    result: Dict[str, object] = {"machine": machine(), "n": a.n, "claim_n": a.claim_n, "timer_overhead": timer_overhead(), "notes": []}
    notes: List[str] = result["notes"]  # type: ignore[assignment]
    systems: Dict[str, Dict[str, Dict[str, float]]] = {"worknode": bench_worknode(a.n, a.claim_n)}
    red = bench_redis(a.n, a.claim_n)
    if red is None:
        notes.append("redis rows skipped: redis-server not on PATH or redis-py not installed")
    else:
        systems["redis-py"] = red
    systems["sqlite3"] = bench_sqlite(a.n, a.claim_n)
    result["systems"] = systems
    ratios: Dict[str, Dict[str, float]] = {}
    for peer in ("redis-py", "sqlite3"):
        if peer in systems:
            ratios[peer] = {op: systems[peer][op]["p50_ns"] / systems["worknode"][op]["p50_ns"]
                            for op in ("show", "claim_complete")}
    result["p50_ratio_peer_over_worknode"] = ratios
    show = systems["worknode"]["show"]["p50_ns"]
    result["goals"] = {
        "show_p50_le_2us": show <= 2000,
        "ge_20x_redis_show": ratios.get("redis-py", {}).get("show", 0) >= 20,
        "ge_20x_redis_claim_complete": ratios.get("redis-py", {}).get("claim_complete", 0) >= 20,
    }
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"{'system':10} {'op':16} {'p50 µs':>9} {'p90 µs':>9} {'p99 µs':>9}")
    for sysname, rows in systems.items():
        for op, r in rows.items():
            print(f"{sysname:10} {op:16} {r['p50_ns'] / 1000:9.2f} {r['p90_ns'] / 1000:9.2f} {r['p99_ns'] / 1000:9.2f}")
    for peer, rs in ratios.items():
        print(f"p50 {peer} / worknode: " + ", ".join(f"{op} {x:.1f}x" for op, x in rs.items()))
    for note in notes:
        print("note:", note)
    print(f"timer overhead p50 {result['timer_overhead']['p50_ns']:.0f} ns; written to {a.out}")  # type: ignore[index]
    return 0


if __name__ == "__main__":
    sys.exit(main())

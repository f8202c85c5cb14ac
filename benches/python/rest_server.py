"""A task board over HTTP as a typical Python standard-library service would serve it:
the peer of `wn serve` in wn-bench's `http` rows (benches/src/http.rs).

ThreadingHTTPServer (one thread per connection), HTTP/1.1 keep-alive, JSON bodies,
tasks in a dict guarded by one lock, ready tasks in a heap (highest priority, then
oldest). Routes, in the shapes the harness reads:

  GET  /api/tasks/{id}            the task
  POST /api/claim                 claims the best ready task: the task with claim.epoch
  POST /api/tasks/{id}/complete   {"epoch": N}: completes it if N is its claim's epoch
  POST /api/tasks/{id}/reopen     makes it ready again (the harness's untimed reset)
  GET  /api/stats                 connections accepted, tasks ready (checks of the run)

Usage: python3 rest_server.py --tasks N [--deadline-s S]. It listens on a free port of
127.0.0.1 and prints `listening on 127.0.0.1:PORT` as its first line; it exits by itself
after the deadline, so it never outlives the harness.
"""

import argparse
import heapq
import itertools
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20

lock = threading.Lock()
tasks = {}
ready = []  # heap of (-priority, order, id)
order = itertools.count()
connections = 0


def make_tasks(n):
    for i in range(n):
        tid = "task-%d" % i
        tasks[tid] = {
            "id": tid,
            "name": "t%d" % i,
            "kind": "task",
            "status": "ready",
            "priority": 0,
            "created_ms": int(time.time() * 1000),
            "claim": None,
            "epoch": 0,
        }
        heapq.heappush(ready, (0, next(order), tid))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes: without TCP_NODELAY the second waits for
    # the client's delayed ACK (40 ms on Linux).
    disable_nagle_algorithm = True

    def setup(self):
        global connections
        super().setup()
        with lock:
            connections += 1

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def error(self, status, code, message):
        self.reply(status, {"error": {"code": code, "message": message}})

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n < 0 or n > MAX_BODY:
            raise ValueError("body of %d bytes" % n)
        raw = self.rfile.read(n) if n else b""
        return json.loads(raw) if raw else {}

    def do_GET(self):
        parts = self.path.strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["api", "tasks"]:
            with lock:
                task = tasks.get(parts[2])
                task = dict(task) if task else None
            if task is None:
                return self.error(404, "not_found", "no task " + parts[2])
            return self.reply(200, task)
        if parts == ["api", "stats"]:
            with lock:
                n_ready = sum(1 for t in tasks.values() if t["status"] == "ready")
                return self.reply(200, {"connections": connections, "ready": n_ready})
        self.error(404, "not_found", "no route " + self.path)

    def do_POST(self):
        try:
            body = self.body()
        except ValueError as e:
            return self.error(400, "usage", "bad body: %s" % e)
        parts = self.path.strip("/").split("/")
        if parts == ["api", "claim"]:
            with lock:
                while ready:
                    _, _, tid = heapq.heappop(ready)
                    task = tasks[tid]
                    if task["status"] == "ready":
                        task["status"] = "claimed"
                        task["epoch"] += 1
                        task["claim"] = {"agent": "http", "epoch": task["epoch"]}
                        return self.reply(200, dict(task))
            return self.error(404, "nothing_ready", "no task is ready")
        if len(parts) == 4 and parts[:2] == ["api", "tasks"]:
            tid, verb = parts[2], parts[3]
            with lock:
                task = tasks.get(tid)
                if task is None:
                    return self.error(404, "not_found", "no task " + tid)
                if verb == "complete":
                    if task["status"] != "claimed":
                        return self.error(409, "not_claimed", "task is " + task["status"])
                    if body.get("epoch") != task["epoch"]:
                        return self.error(409, "stale_epoch", "epoch is %d" % task["epoch"])
                    task["status"] = "complete"
                    task["claim"] = None
                    return self.reply(200, dict(task))
                if verb == "reopen":
                    task["status"] = "ready"
                    task["claim"] = None
                    heapq.heappush(ready, (-task["priority"], next(order), tid))
                    return self.reply(200, dict(task))
        self.error(404, "not_found", "no route " + self.path)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, required=True)
    p.add_argument("--deadline-s", type=float, default=600.0)
    a = p.parse_args()
    if not 1 <= a.tasks <= 1_000_000:
        sys.exit("rest_server.py: --tasks must be 1 to 1000000")
    make_tasks(a.tasks)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Timer(a.deadline_s, lambda: os._exit(3)).start()
    host, port = server.server_address[:2]
    print("listening on %s:%d" % (host, port), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

"""A private ``worknoded`` for tests and benchmarks: started on its own segment name and
data directory, stopped and cleaned up afterwards.

    with worknode.testing.Daemon(nodes=1024) as d:
        wn = worknode.connect(d.segment, agent="t")

The daemon binary is ``$WORKNODE_DAEMON_BIN`` if set, else ``worknoded`` from ``PATH``.
Every wait is bounded.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from typing import List, Optional

READY_TIMEOUT = 30.0  # seconds the daemon has to print its ready line
STOP_TIMEOUT = 10.0  # seconds it has to exit after SIGTERM before it is killed


def daemon_bin() -> str:
    """The ``worknoded`` to run: ``$WORKNODE_DAEMON_BIN``, else the one on ``PATH``."""
    path = os.environ.get("WORKNODE_DAEMON_BIN") or shutil.which("worknoded")
    if not path:
        raise RuntimeError("worknoded not found: set WORKNODE_DAEMON_BIN or put it on PATH")
    return path


class Daemon:
    """A ``worknoded`` process on a fresh segment (``.segment``), killed on ``stop()``."""

    def __init__(self, nodes: int = 1024, events: int = 8192, agents: int = 64, blob_chunks: int = 64,
                 extra: Optional[List[str]] = None, prefix: str = "pytest") -> None:
        self.segment = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.data_dir = tempfile.mkdtemp(prefix=f"wn-{self.segment}-")
        env = dict(os.environ)
        env.pop("WORKNODE_SEGMENT", None)
        env["WORKNODE_DATA_DIR"] = self.data_dir
        args = [daemon_bin(), "--segment", self.segment, "--nodes", str(nodes), "--events", str(events),
                "--agents", str(agents), "--blob-chunks", str(blob_chunks), "--grace-ms", "100"]
        self.proc = subprocess.Popen(args + list(extra or []), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, text=True)
        lines: "queue.Queue[Optional[str]]" = queue.Queue()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                line = None
            if line is not None and "ready" in line:
                break
            if line is None or left <= 0:
                err = ""
                self.stop()
                if self.proc.stderr is not None:
                    err = self.proc.stderr.read()
                raise RuntimeError(f"worknoded did not become ready within {READY_TIMEOUT}s: {err.strip()}")

    def mint(self, rights: str, agent: str, under: Optional[str] = None, ttl: str = "1h") -> str:
        """A capability token for ``agent`` with ``rights`` (``wn token mint``), limited to
        the subtree ``under`` if given. Runs ``$WORKNODE_WN_BIN``, else ``wn`` on ``PATH``."""
        wn = os.environ.get("WORKNODE_WN_BIN") or shutil.which("wn")
        if not wn:
            raise RuntimeError("wn not found: set WORKNODE_WN_BIN or put it on PATH")
        args = [wn, "--segment", self.segment, "--data-dir", self.data_dir, "--agent", agent,
                "token", "mint", "--rights", rights, "--ttl", ttl]
        if under is not None:
            args += ["--under", under]
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"wn token mint failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout.strip()

    def stop(self) -> None:
        """Stops the daemon (SIGTERM, then SIGKILL after a bound) and removes its files."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        for p in (f"/dev/shm/{self.segment}",):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "Daemon":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

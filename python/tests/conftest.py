"""Fixtures: a private worknoded per test (see worknode.testing), and helpers to run
worker code in separate Python processes with bounded waits."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import textwrap
import threading
from typing import Iterator, List

import pytest

import worknode
from worknode.testing import Daemon

CHILD_TIMEOUT = 120.0  # seconds any child process may take


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    """A fresh daemon on its own segment."""
    d = Daemon(nodes=2048, events=16384, agents=64, blob_chunks=64)
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[worknode.Client]:
    """An agent client (`tester`) on the test's daemon."""
    c = worknode.connect(daemon.segment, agent="tester")
    try:
        yield c
    finally:
        c.close()


def spawn(code: str, *args: str, stdin: bool = False) -> subprocess.Popen:
    """Starts `python -c CODE ARGS…` (code dedented), stdout and stderr piped as text;
    with `stdin`, its stdin is a pipe too."""
    env = dict(os.environ)
    env.pop("WORKNODE_AGENT", None)
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.PIPE if stdin else None, text=True, env=env)


def first_line(p: subprocess.Popen, timeout: float = CHILD_TIMEOUT) -> str:
    """The child's next stdout line, stripped, read with a bound (the child is killed
    and the test fails if none comes)."""
    got: "queue.Queue[str]" = queue.Queue()
    assert p.stdout is not None
    threading.Thread(target=lambda: got.put(p.stdout.readline()), daemon=True).start()
    try:
        return got.get(timeout=timeout).strip()
    except queue.Empty:
        p.kill()
        pytest.fail(f"child printed nothing within {timeout}s; killed it")


def finish(p: subprocess.Popen, timeout: float = CHILD_TIMEOUT) -> List[str]:
    """Waits (bounded) for a child to exit 0 and returns its stdout lines."""
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate(timeout=10)
        pytest.fail(f"child did not finish within {timeout}s; killed it. stderr: {err}")
    assert p.returncode == 0, f"child exited {p.returncode}: {err}"
    return out.splitlines()

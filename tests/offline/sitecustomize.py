"""Loaded at start-up by every Python process a unit test starts (tests/conftest.py puts this
folder first on PYTHONPATH): the process may not connect to anything, so a unit test whose
subprocess reaches for Redis or MariaDB fails, not only one that does so itself.

Each refused address is appended to the file named by EASEOFF_TEST_OFFLINE_LOG, where the
test's teardown reads it: a refusal the code under test caught and survived still fails it.
"""

from __future__ import annotations

import os
import socket
from typing import Any

LOG_ENV = "EASEOFF_TEST_OFFLINE_LOG"


def refusal(log: str | None, seen: list[str] | None = None) -> Any:
    """A stand-in for socket.connect and connect_ex (TCP or unix, blocking or not) that raises,
    noting the address in `seen` and in the file `log`."""

    def refused(self: socket.socket, address: Any, *args: Any, **kwargs: Any) -> Any:
        what = f"{self.family.name} {address!r}"
        if seen is not None:
            seen.append(what)
        if log:
            with open(log, "a", encoding="utf-8") as out:
                out.write(f"pid {os.getpid()}: {what}\n")
        raise ConnectionRefusedError(f"a unit test may not connect: {what}")

    return refused


if os.environ.get(LOG_ENV):
    socket.socket.connect = socket.socket.connect_ex = refusal(os.environ[LOG_ENV])  # type: ignore[method-assign]

"""SIGTERM/SIGHUP ends a test session as Ctrl-C does, and the exit status still names the signal.

hack/localcluster.py's ``register_cleanup`` stops the session's cluster on the signal, then raises
what ``interrupted`` returns: a ``KeyboardInterrupt``, which pytest answers by ending the session and
tearing down every fixture (the operators, object stores and trainers they started). Its default, a
``SystemExit``, pytest would report as one failed test and go on, against a stopped cluster.
``pytest_sessionfinish`` (imported by tests/conftest.py, so pytest finds it there) then makes the exit
status 128 + the signal, as a shell reports a death by it, so ``timeout`` or CI sees a termination and
not pytest's "interrupted" (2).
"""

from __future__ import annotations

from typing import Any

received: list[int] = []


class Terminated(KeyboardInterrupt):
    """The session was sent ``signum``; its cluster is already stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signum}; the local cluster is stopped")
        self.signum = signum


def interrupted(signum: int) -> BaseException:
    """``register_cleanup``'s ``unwind`` for a pytest session."""
    received.append(signum)
    return Terminated(signum)


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    if received:
        session.exitstatus = 128 + received[0]

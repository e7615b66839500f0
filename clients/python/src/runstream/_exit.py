"""Ending runs with the process: finished at exit, failed on an uncaught exception, aborted on
KeyboardInterrupt or SIGTERM.

Hooks are installed once, on the first tracked run, and chain to whatever was there before:
the previous ``sys.excepthook`` still prints the traceback, and a SIGTERM handler is installed
only when the program has none of its own (after the runs are ended the signal is raised
again with the default action, so the exit status still says SIGTERM).
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .run import Run

_open: list[Run] = []
_lock = threading.Lock()
_installed = False
_previous_excepthook = sys.excepthook


def track(run: Run) -> None:
    global _installed
    with _lock:
        _open.append(run)
        if _installed:
            return
        _installed = True
    atexit.register(_at_exit)
    _install_excepthook()
    _install_sigterm()


def forget(run: Run) -> None:
    with _lock:
        if run in _open:
            _open.remove(run)


def _end_all(state: str, message: str) -> None:
    with _lock:
        runs = list(_open)
    for run in runs:
        try:
            run.finish(state, message)  # type: ignore[arg-type]
        except Exception:  # at exit, a broken run must not hide the others or the real error
            pass


def _at_exit() -> None:
    _end_all("finished", "")


def _install_excepthook() -> None:
    global _previous_excepthook
    _previous_excepthook = sys.excepthook

    def hook(exc_type: Any, exc: Any, tb: Any) -> None:
        from .run import _exception_message

        try:
            if issubclass(exc_type, KeyboardInterrupt):
                _end_all("aborted", "KeyboardInterrupt")
            else:
                _end_all("failed", _exception_message(exc_type, exc, tb))
        finally:
            _previous_excepthook(exc_type, exc, tb)

    sys.excepthook = hook


def _install_sigterm() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
            return  # the program handles SIGTERM itself
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):
        pass


def _on_sigterm(signum: int, frame: Any) -> None:
    _end_all("aborted", "terminated by SIGTERM")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)

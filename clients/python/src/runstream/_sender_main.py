"""The sender process of a live run (see ``sender.ProcessDelivery``).

    python -m runstream._sender_main RUN_DIR URL PROJECT RUN LINGER

The token comes in ``RUNSTREAM_SENDER_TOKEN``. Status goes to stdout as JSON lines; stdin
reaching its end means the run is over (or its process died): deliver the rest, for at most
LINGER seconds, and exit 0 if everything arrived.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from .sender import Sender
from .spool import SpoolLock
from .transport import Transport


def main(argv: list[str]) -> int:
    directory, url, project, run, linger = Path(argv[0]), argv[1], argv[2], argv[3], float(argv[4])
    out_lock = threading.Lock()

    def emit(msg: dict[str, str]) -> None:
        with out_lock:
            try:
                sys.stdout.write(json.dumps(msg) + "\n")
                sys.stdout.flush()
            except (OSError, ValueError):  # the run's process is gone: nobody to tell
                pass

    lock = SpoolLock(directory)
    deadline = time.monotonic() + 10
    while not lock.acquire():
        if time.monotonic() > deadline:
            emit({"warning": f"runstream: another process ({lock.holder()}) is sending {directory}; "
                             "this run only writes to the spool"})
            return 3
        time.sleep(0.1)
    transport = Transport(url, os.environ.get("RUNSTREAM_SENDER_TOKEN"))
    sender = Sender(directory, transport, project, run)
    sender.on_warning = lambda m: emit({"warning": m})
    closing = threading.Event()

    def watch_stdin() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        closing.set()
        sender.wake.set()
        # Deliver what is left for a bounded time, then stop (progress is kept).
        def give_up() -> None:
            sender.stopping.set()
            sender.wake.set()

        timer = threading.Timer(linger, give_up)
        timer.daemon = True
        timer.start()

    threading.Thread(target=watch_stdin, daemon=True).start()
    last = [""]

    def report() -> None:
        pos = sender.stats.last_position
        if pos and pos != last[0]:
            last[0] = pos
            emit({"position": pos})

    try:
        sender.pump(closing.is_set, report)
    finally:
        report()
        transport.close()
        lock.release()
    if sender.blocked:
        emit({"blocked": sender.blocked})
        return 2
    if sender.reader.next_unit() is not None:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

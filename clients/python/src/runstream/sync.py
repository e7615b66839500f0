"""``runstream-sync``: upload spooled runs (offline runs, and what a run could not deliver).

A run directory is sent from its recorded progress, inflight range first, so a sync after a
crash, or a second sync, delivers each event exactly once. A run that a live process is still
sending (it holds the spool lock) is left to that process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .progress import ProgressBar, human_bytes, quiet
from .sender import Sender
from .spool import CLOSED_FILE, RUN_FILE, SpoolLock, default_root, read_run_info
from .transport import Transport


@dataclass
class SyncResult:
    """What one run's sync did."""

    directory: Path
    run: str
    delivered_events: int = 0
    delivered_files: int = 0
    duplicates: int = 0
    pending_bytes: int = 0
    pending_lines: int = 0
    rejected_lines: int = 0
    skipped: str = ""
    position: str = ""

    @property
    def complete(self) -> bool:
        return not self.skipped and self.pending_lines == 0


def find_runs(paths: list[Path]) -> list[Path]:
    """Run directories (holding run.json) at or below the given paths, at most three levels."""
    found: list[Path] = []
    for p in paths:
        if (p / RUN_FILE).is_file():
            found.append(p)
            continue
        for depth in ("*", "*/*", "*/*/*"):
            found.extend(sorted(q.parent for q in p.glob(f"{depth}/{RUN_FILE}")))
    seen: set[Path] = set()
    out = []
    for d in found:
        r = d.resolve()
        if r not in seen:
            seen.add(r)
            out.append(d)
    return out


def sync_run(
    directory: Path,
    *,
    url: str | None = None,
    token: str | None = None,
    retry_for: float = 60.0,
    keep: bool = False,
    progress: bool = True,
) -> SyncResult:
    """Sends one run directory; never raises for server trouble (see the result)."""
    info = read_run_info(directory)
    run, project = info["run"], info["project"]
    result = SyncResult(directory, run)
    target = url or os.environ.get("RUNSTREAM_URL") or info.get("url")
    if not target:
        result.skipped = "no server url: pass --url or set RUNSTREAM_URL"
        return result
    lock = SpoolLock(directory)
    # A run's own sender may still be delivering (its training process just ended): let it.
    deadline = time.monotonic() + retry_for
    told = False
    while not lock.acquire():
        if time.monotonic() >= deadline:
            result.skipped = f"process {lock.holder()} is sending it"
            return result
        if progress and not told:
            print(f"{project}/{run}: waiting for process {lock.holder()}, which is sending it", file=sys.stderr)
            told = True
        time.sleep(0.2)
    transport = Transport(target, token if token is not None else os.environ.get("RUNSTREAM_TOKEN"))
    try:
        sender = Sender(directory, transport, project, run)
        sender.on_warning = lambda m: print(m, file=sys.stderr)
        total = sender.pending_bytes()
        bar = ProgressBar(f"{project}/{run}", total) if progress and total else None

        def tick() -> None:
            if bar is not None:
                bar.update(total - sender.pending_bytes())

        sender.pump(lambda: True, tick, give_up_after=retry_for)
        if bar is not None:
            tick()
            bar.close()
        s = sender.stats
        result.delivered_events, result.delivered_files = s.events, s.files
        result.duplicates, result.rejected_lines, result.position = s.duplicates, s.rejected_lines, s.last_position
        if sender.blocked:
            result.skipped = sender.blocked
        result.pending_bytes, result.pending_lines = sender.reader.pending()
    finally:
        transport.close()
        lock.release()
    if result.complete and not keep and (directory / CLOSED_FILE).exists():
        shutil.rmtree(directory, ignore_errors=True)
    return result


def sync(
    paths: list[str | os.PathLike[str]] | None = None,
    *,
    url: str | None = None,
    token: str | None = None,
    retry_for: float = 60.0,
    keep: bool = False,
    progress: bool = True,
) -> list[SyncResult]:
    """Uploads every spooled run at or below ``paths`` (default: the spool root)."""
    roots = [Path(p) for p in paths] if paths else [default_root()]
    return [
        sync_run(d, url=url, token=token, retry_for=retry_for, keep=keep, progress=progress)
        for d in find_runs(roots)
    ]


def main(argv: list[str] | None = None, prog: str = "runstream-sync") -> int:
    """Command line; exit status 0 when everything was delivered, 1 otherwise."""
    ap = argparse.ArgumentParser(
        prog=prog,
        description="Upload spooled runstream runs: offline runs and anything a run left undelivered.",
    )
    ap.add_argument("paths", nargs="*", metavar="PATH",
                    help="a run's spool directory or a folder of them (default: the spool root, "
                         "$RUNSTREAM_SPOOL_DIR or ~/.runstream/spool)")
    ap.add_argument("--url", help="server url (default: $RUNSTREAM_URL, else the url the run was started with)")
    ap.add_argument("--token", help="API token (default: $RUNSTREAM_TOKEN)")
    ap.add_argument("--retry-for", type=float, default=60.0, metavar="SECONDS",
                    help="give up on a run after this long without progress, or after waiting this "
                         "long for another process that is sending it (default 60)")
    ap.add_argument("--keep", action="store_true", help="keep delivered run directories")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    roots = [Path(p) for p in args.paths] if args.paths else [default_root()]
    for root in roots if args.paths else ():  # an absent default root just holds no runs
        if not root.exists():
            print(f"{prog}: {root} does not exist", file=sys.stderr)
            return 2
    runs = find_runs(roots)
    if not runs:
        print(f"{prog}: no spooled runs under {', '.join(map(str, roots))}")
        return 0
    ok = True
    for d in runs:
        try:
            r = sync_run(d, url=args.url, token=args.token, retry_for=args.retry_for,
                         keep=args.keep, progress=not (args.quiet or quiet()))
        except (OSError, ValueError, KeyError) as e:
            print(f"{d}: cannot read the spool: {e}", file=sys.stderr)
            ok = False
            continue
        line = (f"{d}: {r.delivered_events} events and {r.delivered_files} files delivered"
                f" ({r.duplicates} already there)")
        if r.position:
            line += f", position {r.position}"
        if r.rejected_lines:
            line += f", {r.rejected_lines} records refused (see rejected.jsonl)"
        if r.skipped:
            line += f"; stopped: {r.skipped}"
        if r.pending_lines:
            line += f"; {r.pending_lines} records ({human_bytes(r.pending_bytes)}) still to send"
            ok = False
        elif r.skipped:
            ok = False
        print(line)
    return 0 if ok else 1


def console_main() -> None:
    sys.exit(main())

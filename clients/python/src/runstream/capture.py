"""What a run needs to be reproduced: code version, command, interpreter, packages, machine.

Everything is read locally and cheaply (git with a timeout, package metadata without pip), and
nothing here raises: a missing git or an odd environment leaves the matching attribute out.
"""

from __future__ import annotations

import getpass
import importlib.metadata
import os
import platform
import shlex
import socket
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GIT_TIMEOUT = 5.0
#: Largest uncommitted diff kept, in bytes; a larger one is cut (and said to be).
MAX_DIFF_BYTES = 16 << 20


@dataclass
class Capture:
    """Attributes under ``sys/`` and files to upload with the run."""

    attributes: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)


def code_dir() -> Path:
    """The folder of the main script, or the working folder for -c, -m and notebooks."""
    main = sys.argv[0] if sys.argv else ""
    if main and os.path.isfile(main):
        return Path(main).resolve().parent
    return Path.cwd()


def _git(args: list[str], cwd: Path) -> bytes | None:
    try:
        r = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            timeout=GIT_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


def _strip_credentials(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def git_capture(cwd: Path, out: Capture) -> None:
    commit = _git(["rev-parse", "HEAD"], cwd)
    if commit is None:
        return
    out.attributes["sys/git/commit"] = commit.decode().strip()
    branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], cwd)
    if branch:
        out.attributes["sys/git/branch"] = branch.decode().strip()
    remote = _git(["config", "--get", "remote.origin.url"], cwd)
    if remote:
        out.attributes["sys/git/remote"] = _strip_credentials(remote.decode().strip())
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    dirty = bool(status and status.strip())
    out.attributes["sys/git/dirty"] = dirty
    if dirty:
        # Staged and unstaged changes to tracked files, against the commit above.
        diff = _git(["diff", "HEAD", "--binary"], cwd)
        if diff:
            if len(diff) > MAX_DIFF_BYTES:
                diff = diff[:MAX_DIFF_BYTES] + b"\n# runstream: diff cut at 16 MB\n"
            out.files["sys/git/diff.patch"] = diff


def installed_packages() -> str:
    """``name==version`` per installed distribution, sorted, as pip freeze lists them."""
    seen: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        try:
            name = dist.metadata["Name"]
        except Exception:
            continue
        if name and name.lower() not in seen:
            seen[name.lower()] = f"{name}=={dist.version}"
    return "".join(line + "\n" for _, line in sorted(seen.items()))


def environment_capture(*, git: bool = True, packages: bool = True) -> Capture:
    out = Capture()
    a = out.attributes
    a["sys/command"] = shlex.join([os.path.basename(sys.executable or "python"), *sys.argv])
    a["sys/cwd"] = os.getcwd()
    a["sys/python/version"] = platform.python_version()
    a["sys/python/implementation"] = platform.python_implementation()
    a["sys/python/executable"] = sys.executable or ""
    a["sys/os/name"] = platform.system()
    a["sys/os/release"] = platform.release()
    a["sys/os/platform"] = platform.platform()
    a["sys/hostname"] = socket.gethostname()
    a["sys/cpu_count"] = os.cpu_count() or 0
    a["sys/pid"] = os.getpid()
    try:
        a["sys/user"] = getpass.getuser()
    except Exception:
        pass
    if git:
        git_capture(code_dir(), out)
    if packages:
        try:
            out.files["sys/requirements.txt"] = installed_packages().encode()
        except Exception:
            pass
    return out

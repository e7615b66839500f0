"""runstream: log parameters, metrics, files and lineage from training code.

    import runstream

    with runstream.init(project="vision", config={"lr": 0.01}, tags=["baseline"]) as run:
        for step in range(100):
            run.log({"train/loss": loss, "train/acc": acc})
        run["params/optimizer/name"] = "adam"

Logging never waits on the network: each call is written to a local spool before it returns and
sent by a background thread, so a crash loses nothing that was logged and a server outage only
delays delivery. ``runstream-sync`` uploads offline runs and whatever a run left behind.
"""

from ._version import __version__
from ._validate import ValidationError
from .run import Run, RunClosedError, digest_dir, digest_file, init
from .sender import RunstreamWarning
from .sync import sync

__all__ = [
    "Run",
    "RunClosedError",
    "RunstreamWarning",
    "ValidationError",
    "__version__",
    "digest_dir",
    "digest_file",
    "init",
    "sync",
]

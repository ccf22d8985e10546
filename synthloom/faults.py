"""Fault injection for the commit protocol's tests: `SYNTHLOOM_CRASH_AT=<point>` SIGKILLs the process
at that named point, so a test can kill a real build at every step of the commit and check that the
rerun finishes it. Unset (always, outside tests), a crash point costs one dictionary lookup."""

from __future__ import annotations

import os
import signal

POINTS = (
    "build:shards-done",      # every shard staged, no metadata yet
    "commit:pending-written",  # .manifest.pending.json in the staging folder
    "commit:renamed",         # staging folder renamed to the version, manifest not yet in place
    "build:committed",        # manifest.json in place, resume state not yet removed
    "finish:before-latest",   # resume state removed, `latest` / evaluation not done
)
# Reached only by builds whose recipe has `labelers:`.
LABEL_POINTS = (
    "build:generated-before-labels",  # every shard generated into .raw/, none labelled yet
)
# The `synthloom label` command's commit (flows/label.py); the two `commit:` points are ds.commit's.
LABEL_COMMAND_POINTS = (
    "label:shards-done",       # every shard labelled into staging, no metadata yet
    "commit:pending-written",
    "commit:renamed",          # the new version's folder exists, its manifest.json does not
    "label:committed",         # manifest.json in place, resume state not yet removed
    "label:before-latest",     # resume state removed, `latest` not yet moved
)


def crash_point(name: str) -> None:
    if os.environ.get("SYNTHLOOM_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def injected(name: str) -> bool:
    """Whether the test asked for the named fault (not a kill: e.g. `dcgan:nan-loss-epoch-2` makes that
    epoch's loss NaN, to test that a diverged training stops and keeps its last good checkpoint)."""
    return os.environ.get("SYNTHLOOM_CRASH_AT") == name


# A model store on an object store (remote_models.py): the entry's marker is its commit.
MODEL_STORE_POINTS = (
    "models:file-uploaded",   # one file of a sealed entry uploaded, no marker
    "models:before-marker",   # every file uploaded, no marker
)

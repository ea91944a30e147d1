"""What this machine lends the process: the CPU cores it may run on."""

from __future__ import annotations

import os


def cores() -> int:
    """The CPU cores this process may run on (its affinity, where the OS tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

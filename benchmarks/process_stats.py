"""What a benchmark's child process reports about itself: peak RSS and CPU time."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_kb() -> int:
    """Peak resident set (VmHWM) of this process, or of its largest finished child."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            own = int(line.split()[1])
            break
    else:  # not Linux: ru_maxrss is in KB on Linux, bytes on macOS
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, child)


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (a pool's
    workers): what the work cost, whatever else the machine was running meanwhile."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + child.ru_utime + child.ru_stime

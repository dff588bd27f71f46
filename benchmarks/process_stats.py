"""What the benchmarks share: a child process that times one tool's work and reports its
peak RSS and CPU time, rounds of such runs, and the ratios between tools across rounds."""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
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


def measured(work: Callable[[], object]) -> dict[str, float]:
    """Run ``work`` (in the child); its wall and CPU seconds and this process's peak RSS."""
    start, cpu_start = time.perf_counter(), cpu_seconds()
    work()
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak_rss_kb() / 1024}


def run_child(script: str, args: Sequence[str], out: Path) -> dict[str, float]:
    """``python SCRIPT --one ARGS...`` in a fresh process; its last line's JSON. ``out``, the
    folder the child wrote, is removed afterwards."""
    proc = subprocess.run(
        [sys.executable, script, "--one", *args], capture_output=True, text=True, check=True
    )
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(proc.stdout.splitlines()[-1])


def rounds(
    tools: Sequence[str], repeat: int, once: Callable[[str, int], dict[str, float]]
) -> list[dict[str, dict[str, float]]]:
    """``repeat`` rounds; each runs every tool once (``once(tool, round)``), one after the
    other, so that the tools of one round share the machine's state (its speed drifts by up
    to 2x over minutes on a shared host) and a ratio within a round compares like with like."""
    return [{tool: once(tool, i) for tool in tools} for i in range(repeat)]


def ratio(rates: Sequence[Mapping[str, float]], a: str, b: str) -> tuple[float, list[float]]:
    """The median over rounds of ``a``'s rate over ``b``'s, and its range."""
    values = [r[a] / r[b] for r in rates]
    return round(statistics.median(values), 2), [round(min(values), 2), round(max(values), 2)]

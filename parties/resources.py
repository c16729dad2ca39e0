"""What this process uses of the machine: resident memory now and at its peak, and when
it started.

Linux figures from the kernel: /proc/self/statm for the resident set now, VmHWM of
/proc/self/status for its high-water mark since exec (every thread included: ZeroMQ's I/O
threads, torch's workers). Elsewhere the peak is getrusage's ru_maxrss and the current
value falls back to the peak.
"""
from __future__ import annotations

import os
import resource
import sys
import time


def peak_rss_bytes() -> int:
    """The most resident memory this process has used so far: VmHWM, which starts afresh
    at exec (getrusage's ru_maxrss does not: a child started by a 300 MB parent would
    report the parent's 300 MB)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def current_rss_bytes() -> int:
    """The resident memory this process uses now."""
    try:
        with open("/proc/self/statm") as fh:
            resident_pages = int(fh.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def process_start_time() -> float:
    """When this process started (time.time() scale): the kernel's start time of the
    process, so that interpreter start-up and imports count; now where unknown."""
    try:
        with open("/proc/self/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat(5), counted after "pid (comm)"
        with open("/proc/uptime") as fh:
            uptime_s = float(fh.read().split()[0])
        return time.time() - uptime_s + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()

"""How many CPUs this process may use: affinity, capped by a cgroup CPU quota (a pod's limit).

``os.cpu_count()`` reports the node's cores; a Kubernetes pod limited to 4 CPUs on a 64-core
node would start 64 workers and be throttled.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cgroup_cpu_limit(cpu_max: Path = CGROUP_CPU_MAX) -> int | None:
    """The cgroup v2 quota in whole CPUs (rounded up), or None when unlimited or unknown."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def usable_cpus() -> int:
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    available = available or os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return min(available, limit) if limit else available

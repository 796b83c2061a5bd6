"""What the benches read of processes from Linux's ``/proc``: CPU seconds, and the processes of
a server by name."""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command's name (utime is [11], stime [12],
    the reaped children's [13] and [14], in ticks); None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int, with_reaped_children: bool = False) -> float:
    """A process's user + system CPU seconds (0 once it is gone); with its reaped children's
    (a PostgreSQL server's ended connections count in its postmaster's)."""
    fields = stat_fields(pid)
    if fields is None:
        return 0.0
    return sum(int(f) for f in fields[11 : 15 if with_reaped_children else 13]) / TICKS


def named(name: str) -> list[int]:
    """Pids of the processes whose command name is ``name`` (PostgreSQL's backends, Redis)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids

"""The launcher's process tree as /proc shows it: the children of a process, and whether a pid still runs. The
launcher starts each service in a session of its own, so its children are found by their parent pid, not by a
process group; `make bench` and the launcher's tests look them up this way."""

from pathlib import Path


def children_of(parent: int) -> dict[int, list[str]]:
    """The live child processes of `parent`: pid -> argv (zombies, dead but not yet reaped, left out)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if int(ppid) == parent and state != "Z":
            children[int(entry.name)] = [arg for arg in argv if arg]
    return children


def alive(pid: int) -> bool:
    """Whether `pid` is a running process (a zombie does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"

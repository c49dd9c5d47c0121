"""Hosts for multi-node jobs: hostfiles (``host slots=N``, as Open MPI and DeepSpeed
read them; ``host:N`` and bare ``host`` are accepted too) and ``--hosts h1:4,h2:4``."""
from __future__ import annotations


class HostError(ValueError):
    pass


def parse_hostfile(path: str) -> list:
    """[(host, slots)] from a hostfile; comments (#) and blank lines are skipped."""
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError as e:
        raise HostError(f"hostfile {path}: {e.strerror}") from None
    hosts = []
    for n, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        host, slots = parts[0], 1
        if ":" in host:
            host, _, s = host.partition(":")
            slots = _slots(s, f"{path}:{n}")
        for extra in parts[1:]:
            key, _, val = extra.partition("=")
            if key in ("slots", "max_slots", "max-slots"):
                if key == "slots":
                    slots = _slots(val, f"{path}:{n}")
            else:
                raise HostError(f"{path}:{n}: unexpected '{extra}'; lines look like 'node1 slots=4'")
        hosts.append((host, slots))
    if not hosts:
        raise HostError(f"hostfile {path} lists no hosts")
    return hosts


def parse_hosts(text: str) -> list:
    """[(host, slots)] from 'h1:4,h2:4' (a host without ':N' has one slot)."""
    hosts = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        host, _, s = item.partition(":")
        hosts.append((host, _slots(s, f"--hosts {text}") if s else 1))
    if not hosts:
        raise HostError(f"--hosts {text!r} lists no hosts")
    return hosts


def _slots(text: str, where: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise HostError(f"{where}: slots must be a whole number, got {text!r}") from None
    if n < 1:
        raise HostError(f"{where}: slots must be at least 1, got {n}")
    return n


def check_capacity(hosts: list, nprocs: int) -> None:
    total = sum(s for _, s in hosts)
    if nprocs > total:
        raise HostError(
            f"{nprocs} ranks requested but the hosts offer {total} slots "
            f"({', '.join(f'{h}:{s}' for h, s in hosts)}); lower --np or add slots"
        )

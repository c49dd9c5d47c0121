"""Hosts for multi-node jobs: hostfiles (``host slots=N``, as Open MPI and DeepSpeed
read them; ``host:N`` and bare ``host`` are accepted too) and ``--hosts h1:4,h2:4``.

Every problem is reported at once: a ``HostError`` whose ``errors`` lists them, each
naming the file and line (or the --hosts item)."""
from __future__ import annotations

import os


class HostError(ValueError):
    """Hosts that cannot be used. ``errors`` lists every problem; ``str()`` gives them
    one per line (after a line counting them when there are several)."""

    def __init__(self, errors, source: str | None = None):
        if isinstance(errors, str):
            errors = [errors]
        self.errors = list(errors)
        self.source = source
        if len(self.errors) == 1:
            text = self.errors[0]
        else:
            where = f" in {source}" if source else ""
            text = "\n".join([f"{len(self.errors)} problems{where}:"] + self.errors)
        super().__init__(text)

    def __reduce__(self):
        return type(self), (self.errors, self.source)


# Characters a host name cannot hold: they separate hosts, slots and fields in the
# forms above and in the MPI launchers' own host lists.
_BAD_IN_HOST = {" ": "a space", "\t": "a tab", ",": "a comma", ":": "a colon", "=": "'='", "#": "'#'"}


def _host_problem(host: str):
    """What is wrong with ``host`` as a host name (None if nothing)."""
    if not host:
        return "the host name is empty"
    for ch, name in _BAD_IN_HOST.items():
        if ch in host:
            return f"host name {host!r} contains {name}"
    if any(ord(c) < 32 or ord(c) == 127 for c in host):
        return f"host name {host!r} contains a control character"
    return None


def parse_hostfile(path: str) -> list:
    """[(host, slots)] from a hostfile; comments (#) and blank lines are skipped.
    Raises one HostError listing every bad line."""
    if os.path.isdir(path):
        raise HostError(f"hostfile {path} is a directory, not a file of 'host slots=N' lines")
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except IsADirectoryError:
        raise HostError(f"hostfile {path} is a directory, not a file of 'host slots=N' lines") from None
    except OSError as e:
        raise HostError(f"hostfile {path}: {e.strerror or e}") from None
    try:
        lines = blob.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        line = blob[:e.start].count(b"\n") + 1
        raise HostError(f"{path}:{line}: not text (not UTF-8); lines look like 'node1 slots=4'") from None
    hosts, errors, seen = [], [], {}
    for n, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{path}:{n}"
        parts = line.split()
        host, slots, ok = parts[0], 1, True
        if ":" in host:
            host, _, s = host.partition(":")
            slots = _slots(s, where, errors)
            ok = slots is not None
        why = _host_problem(host)
        if why:
            errors.append(f"{where}: {why}; lines look like 'node1 slots=4'")
            ok = False
        for extra in parts[1:]:
            key, _, val = extra.partition("=")
            if key in ("slots", "max_slots", "max-slots"):
                if key == "slots":
                    slots = _slots(val, where, errors)
                    ok = ok and slots is not None
            else:
                errors.append(f"{where}: unexpected '{extra}'; lines look like 'node1 slots=4'")
                ok = False
        if not ok:
            continue
        if host in seen:
            errors.append(f"{where}: host {host!r} is listed twice (also on line {seen[host]}); give each "
                          "host once, with all its slots")
            continue
        seen[host] = n
        hosts.append((host, slots))
    if errors:
        raise HostError(errors, f"hostfile {path}")
    if not hosts:
        raise HostError(f"hostfile {path} lists no hosts")
    return hosts


def parse_hosts(text: str) -> list:
    """[(host, slots)] from 'h1:4,h2:4' (a host without ':N' has one slot). Raises one
    HostError listing every bad item."""
    hosts, errors, seen = [], [], {}
    where = f"--hosts {text!r}"
    for i, item in enumerate(text.split(","), 1):
        item = item.strip()
        if not item:
            continue
        host, colon, s = item.partition(":")
        slots = _slots(s, f"{where}, item {i} ({item!r})", errors) if colon else 1
        why = _host_problem(host)
        if why:
            errors.append(f"{where}, item {i} ({item!r}): {why}; give hosts as h1:4,h2:4")
            continue
        if slots is None:
            continue
        if host in seen:
            errors.append(f"{where}: host {host!r} is listed twice (items {seen[host]} and {i}); give each "
                          "host once, with all its slots")
            continue
        seen[host] = i
        hosts.append((host, slots))
    if errors:
        raise HostError(errors, where)
    if not hosts:
        raise HostError(f"--hosts {text!r} lists no hosts")
    return hosts


def _slots(text: str, where: str, errors: list):
    """The slot count in ``text``, or None after adding the problem to ``errors``."""
    try:
        n = int(text)
    except ValueError:
        errors.append(f"{where}: slots must be a whole number, got {text!r}")
        return None
    if n < 1:
        errors.append(f"{where}: slots must be at least 1, got {n}")
        return None
    return n


def check_capacity(hosts: list, nprocs: int) -> None:
    total = sum(s for _, s in hosts)
    if nprocs > total:
        raise HostError(
            f"{nprocs} ranks requested but the hosts offer {total} slots "
            f"({', '.join(f'{h}:{s}' for h, s in hosts)}); lower --np or add slots"
        )

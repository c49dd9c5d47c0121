"""Finding the MPI launcher in use and building its command line.

MPICH's Hydra and Open MPI differ in their flags: hostfiles (Hydra reads
``host:N``, Open MPI ``host slots=N``), exporting environment variables
(``-genvlist`` vs ``-x``), and Open MPI's refusal to run as root without
``--allow-run-as-root``. Slurm clusters use ``srun`` instead.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

# Variables every rank needs to find the same Python, libraries and settings.
_EXPORT = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "OMP_NUM_THREADS",
           "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")


def find_mpiexec(explicit: str | None = None) -> str:
    """The mpiexec next to this Python (the mpich wheel puts it there), else on PATH."""
    if explicit:
        return explicit
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.path.exists(beside):
        return beside
    found = shutil.which("mpiexec") or shutil.which("mpirun")
    if found is None:
        raise FileNotFoundError(
            "no mpiexec found: pip install -e \".[mpi]\" provides MPICH's, or put your MPI's "
            "bin directory on PATH (or use --debug to run in this process)"
        )
    return found


def detect_flavor(mpiexec: str) -> str:
    """'mpich' (Hydra), 'openmpi', or 'unknown', from ``mpiexec --version``."""
    try:
        out = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=20)
        text = out.stdout + out.stderr
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if "HYDRA" in text or "MPICH" in text or "Intel(R) MPI" in text:
        return "mpich"
    if "Open MPI" in text or "OpenRTE" in text or "open-mpi" in text.lower():
        return "openmpi"
    return "unknown"


def exported_env(env: dict) -> list:
    names = [k for k in _EXPORT if k in env]
    names += sorted(k for k in env if k.startswith("DISTGRAD_") and k not in names)
    return names


def build_command(flavor: str, mpiexec: str, nprocs: int, program: list, env_names: list,
                  hosts: list | None = None, hostfile: str | None = None,
                  machinefile: str | None = None, is_root: bool = False) -> list:
    """The launch command. ``hosts`` is [(host, slots)] from --hosts or a hostfile.
    With a hostfile, each MPI is given ``machinefile``: the hosts rewritten by the
    caller in its own format (``hydra_machinefile`` or ``openmpi_hostfile``)."""
    if flavor == "srun":
        cmd = ["srun", "--ntasks", str(nprocs), "--export", "ALL"]
        if hosts:
            cmd += ["--nodes", str(len(hosts)), "--nodelist", ",".join(h for h, _ in hosts)]
        return cmd + program
    cmd = [mpiexec, "-n", str(nprocs)]
    if flavor == "openmpi":
        if hostfile:
            cmd += ["--hostfile", machinefile or hostfile]
        elif hosts:
            cmd += ["--host", ",".join(f"{h}:{s}" for h, s in hosts)]
        for name in env_names:
            cmd += ["-x", name]
        if is_root:
            cmd.append("--allow-run-as-root")
        return cmd + program
    # MPICH / Hydra (and launchers that take its flags)
    if hostfile:
        if machinefile is None:
            raise ValueError("Hydra needs the hostfile rewritten as a machinefile (host:N lines)")
        cmd += ["-f", machinefile]
    elif hosts:
        cmd += ["-hosts", ",".join(f"{h}:{s}" for h, s in hosts)]
    if env_names:
        cmd += ["-genvlist", ",".join(env_names)]
    return cmd + program


def hydra_machinefile(hosts: list) -> str:
    """Hydra's machinefile text: one ``host:slots`` line per host."""
    return "".join(f"{h}:{s}\n" for h, s in hosts)


def openmpi_hostfile(hosts: list) -> str:
    """Open MPI's hostfile text: one ``host slots=N`` line per host."""
    return "".join(f"{h} slots={s}\n" for h, s in hosts)

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

# What Open MPI is told to forward (it forwards nothing else but its own OMPI_*
# variables): what every rank needs to find the same Python, libraries and settings.
# MPICH's Hydra and srun --export=ALL forward the launcher's whole environment.
_FORWARD = ("PATH", "LD_LIBRARY_PATH", "VIRTUAL_ENV", "HOME", "TMPDIR")
_FORWARD_PREFIXES = ("DISTGRAD_", "PYTHON", "OMP_", "OPENBLAS_", "MKL_", "CUDA_", "NCCL_", "UCX_", "FI_",
                     "CUPY_")


def find_mpiexec(explicit: str | None = None) -> str:
    """The mpiexec next to this Python (the mpich wheel puts it there), else on PATH."""
    if explicit:
        found = shutil.which(explicit) if os.sep not in explicit else explicit
        if found is None or not os.path.isfile(found):
            raise FileNotFoundError(f"--mpiexec {explicit}: no such program" + (
                "" if os.sep in explicit else " on PATH") + "; give the path of your MPI's mpiexec or mpirun")
        if not os.access(found, os.X_OK):
            raise FileNotFoundError(f"--mpiexec {explicit}: not executable (chmod +x it, or give another)")
        return os.path.abspath(found)
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
        out = subprocess.run([mpiexec, "--version"], check=False, capture_output=True, text=True, timeout=20)
        text = out.stdout + out.stderr
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if "HYDRA" in text or "MPICH" in text or "Intel(R) MPI" in text:
        return "mpich"
    if "Open MPI" in text or "OpenRTE" in text or "open-mpi" in text.lower():
        return "openmpi"
    return "unknown"


def forwarded_names(env: dict) -> list:
    """The variables Open MPI is told to forward (``-x NAME``)."""
    return sorted(k for k in env if k in _FORWARD or k.startswith(_FORWARD_PREFIXES))


# The PMI that srun must offer the ranks, by the MPI library their mpi4py uses: MPICH
# (the mpich wheel included) speaks PMI-1/PMI-2 but not PMIx; Open MPI speaks PMIx.
# Without --mpi, srun uses the site's MpiDefault (Slurm's own default: none), and
# every rank then starts as an MPI job of its own.
_SRUN_MPI = (("Open MPI", "pmix"), ("MPICH", "pmi2"), ("Intel(R) MPI", "pmi2"), ("MVAPICH", "pmi2"))
_LIBRARY = ("import mpi4py; mpi4py.rc.initialize = False\n"
            "from mpi4py import MPI; print(MPI.Get_library_version())")


def srun_mpi_type(python: str, env: dict, extra_args=()) -> str | None:
    """srun's ``--mpi`` for ranks run by ``python``; None when the user chose
    (``SLURM_MPI_TYPE`` in the environment, or ``--mpi`` among the extra arguments)
    or the MPI library is not recognized (Slurm's MpiDefault then applies)."""
    if env.get("SLURM_MPI_TYPE") or any(a == "--mpi" or a.startswith("--mpi=") for a in extra_args):
        return None
    try:
        out = subprocess.run([python, "-c", _LIBRARY], env=env, capture_output=True, text=True,
                             timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return next((pmi for name, pmi in _SRUN_MPI if name in out.stdout), None)


def build_command(flavor: str, mpiexec: str, nprocs: int, program: list, env: dict | None = None,
                  hosts: list | None = None, extra_args=(), forward=(), is_root: bool = False,
                  srun_mpi: str | None = None) -> list:
    """The launch command, complete: it runs as printed. ``hosts`` is [(host, slots)]
    (from --hosts or a hostfile; given inline, so no file needs to exist); ``env``
    holds variables set for every rank on every host; ``forward`` names variables
    Open MPI is to pass on; ``extra_args`` go to the launcher as given."""
    env = env or {}
    extra_args = list(extra_args)
    if flavor == "srun":
        export = ",".join(["ALL"] + [f"{k}={v}" for k, v in env.items()])
        cmd = ["srun", "--ntasks", str(nprocs), f"--export={export}"]
        if srun_mpi:
            cmd.append(f"--mpi={srun_mpi}")
        if hosts:
            cmd += ["--nodes", str(len(hosts)), "--nodelist", ",".join(h for h, _ in hosts)]
        return cmd + extra_args + program
    cmd = [mpiexec, "-n", str(nprocs)]
    if flavor == "openmpi":
        if hosts:
            cmd += ["--host", ",".join(f"{h}:{s}" for h, s in hosts)]
        else:
            # This machine alone: as many ranks as asked for, as Hydra starts them (Open MPI
            # otherwise refuses more ranks than cores: "not enough slots").
            cmd.append("--oversubscribe")
        for name in forward:
            if name not in env:
                cmd += ["-x", name]
        for k, v in env.items():
            cmd += ["-x", f"{k}={v}"]
        if is_root:
            cmd.append("--allow-run-as-root")
        return cmd + extra_args + program
    # MPICH / Hydra (and launchers that take its flags): the whole environment is
    # forwarded by default; -genv adds this job's own settings.
    if hosts:
        cmd += ["-hosts", ",".join(f"{h}:{s}" for h, s in hosts)]
    for k, v in env.items():
        cmd += ["-genv", k, v]
    return cmd + extra_args + program


def placement(hosts: list, nprocs: int) -> list:
    """[(host, [ranks])]: how mpiexec places ranks by slot, filling each host in order."""
    out, rank = [], 0
    for host, slots in hosts:
        take = list(range(rank, min(nprocs, rank + slots)))
        out.append((host, take))
        rank += len(take)
    return out

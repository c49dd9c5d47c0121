"""``distgrad-launch``: validate a config, then run it as an MPI job or in this
process (``--debug``)."""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time

from distgrad.train.config import ConfigError, load, to_toml

from . import mpi
from .hostfile import HostError, check_capacity, parse_hostfile, parse_hosts

USAGE_EPILOG = """examples:
  distgrad-launch configs/quickstart.toml
  distgrad-launch configs/gpt_chars.toml train.steps=2000 optim.lr=1e-3 --np 4
  distgrad-launch configs/quickstart.toml --debug          # one process, same loss curve
  distgrad-launch configs/multinode.toml --hostfile hosts.txt --np 16 --dry-run
  distgrad-launch configs/quickstart.toml --resume runs/quickstart-20260101-120000
"""


def _parser():
    ap = argparse.ArgumentParser(
        prog="distgrad-launch", description=__doc__, epilog=USAGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="the experiment's TOML file")
    ap.add_argument("overrides", nargs="*", metavar="key.path=value",
                    help="override config keys, e.g. train.steps=100 optim.lr=1e-3")
    ap.add_argument("--np", type=int, help="number of ranks (default: dist.np of the config)")
    hosts = ap.add_mutually_exclusive_group()
    hosts.add_argument("--hostfile", help="hostfile with 'host slots=N' lines, for several machines")
    hosts.add_argument("--hosts", help="hosts as h1:4,h2:4, for several machines")
    ap.add_argument("--launcher", choices=("mpiexec", "srun"), help="how to start the ranks (default: dist.launcher)")
    ap.add_argument("--mpiexec", help="the mpiexec/mpirun to use (default: next to this Python, else on PATH)")
    ap.add_argument("--debug", action="store_true", help="run in this process (world size 1; pdb works)")
    ap.add_argument("--dry-run", action="store_true", help="print the command and exit")
    ap.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    return ap


def _new_run_dir(cfg) -> str:
    base = os.path.join(cfg["run"]["output_dir"], f"{cfg['run']['name']}-{time.strftime('%Y%m%d-%H%M%S')}")
    path, n = base, 1
    while os.path.exists(path):
        n += 1
        path = f"{base}-{n}"
    return path


def _thread_env(env: dict, ranks_here: int) -> dict:
    """One BLAS/OpenMP pool per rank, sized so the ranks on a machine share its cores."""
    env = dict(env)
    threads = str(max(1, (os.cpu_count() or 1) // max(1, ranks_here)))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, threads)
    return env


def main(argv=None) -> int:
    args = _parser().parse_intermixed_args(argv)
    overrides = list(args.overrides)
    if args.np is not None:
        overrides.append(f"dist.np={args.np}")
    if args.hostfile:
        overrides.append(f"dist.hostfile={_quote(args.hostfile)}")
    if args.hosts:
        overrides.append(f"dist.hosts={_quote(args.hosts)}")
    if args.launcher:
        overrides.append(f"dist.launcher={_quote(args.launcher)}")
    try:
        cfg = load(args.config, overrides, world_size=1 if args.debug else None)
        d = cfg["dist"]
        hosts = None
        if d["hostfile"]:
            hosts = parse_hostfile(d["hostfile"])
        elif d["hosts"]:
            hosts = parse_hosts(d["hosts"])
        if hosts and not args.debug:
            check_capacity(hosts, d["np"])
    except (ConfigError, HostError) as e:
        print(f"distgrad-launch: error: {e}", file=sys.stderr)
        return 2

    if args.resume:
        run_dir = args.resume
        problem = _resume_problem(run_dir, cfg)
        if problem:
            print(f"distgrad-launch: error: --resume {run_dir}: {problem}", file=sys.stderr)
            return 2
    else:
        run_dir = _new_run_dir(cfg)
    program = [sys.executable, "-m", "distgrad.train", run_dir] + (["--resume"] if args.resume else [])

    if args.debug:
        if args.dry_run:
            print(f"would run in this process: {shlex.join(program)}")
            return 0
        _write_config(run_dir, cfg)
        from distgrad.train.trainer import Trainer

        try:
            Trainer(cfg, run_dir, resume=bool(args.resume)).run()
        except KeyboardInterrupt:
            return 130
        return 0

    flavor = "srun" if d["launcher"] == "srun" else None
    try:
        exe = "srun" if flavor else mpi.find_mpiexec(args.mpiexec)
    except FileNotFoundError as e:
        print(f"distgrad-launch: error: {e}", file=sys.stderr)
        return 2
    flavor = flavor or mpi.detect_flavor(exe)
    ranks_here = d["np"] if not hosts else max(s for _, s in hosts)
    env = _thread_env(os.environ, ranks_here)
    # The hostfile is rewritten in the form the MPI in use reads best.
    machinefile = (os.path.join(run_dir, "machinefile") if flavor == "mpich" else os.path.join(run_dir, "hostfile")
                   ) if d["hostfile"] and flavor in ("mpich", "openmpi") else None
    cmd = mpi.build_command(flavor, exe, d["np"], program, mpi.exported_env(env), hosts=hosts,
                            hostfile=d["hostfile"], machinefile=machinefile,
                            is_root=hasattr(os, "geteuid") and os.geteuid() == 0)
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    _write_config(run_dir, cfg)
    if machinefile:
        with open(machinefile, "w") as f:
            f.write(mpi.hydra_machinefile(hosts) if flavor == "mpich" else mpi.openmpi_hostfile(hosts))
    print(f"distgrad-launch: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    return _run(cmd, env)


def _resume_problem(run_dir: str, cfg: dict) -> str | None:
    """Why RUN_DIR cannot be resumed with this config (checked before anything in it
    is touched), or None."""
    import json

    from distgrad.train import checkpoint
    from distgrad.train.config import config_hash

    if not os.path.isdir(run_dir):
        return "no such run directory"
    step = checkpoint.latest(run_dir)
    if step is None:
        return "it holds no complete checkpoint"
    with open(checkpoint.paths(run_dir, step)[1]) as f:
        saved = json.load(f).get("config_hash")
    if saved != config_hash(cfg):
        return (f"its checkpoint (step {step}) was made with a different config; resume with the "
                f"run's own config: distgrad-launch {os.path.join(run_dir, 'config.toml')} --resume {run_dir}")
    return None


def _write_config(run_dir: str, cfg: dict) -> None:
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "config.toml"), "w") as f:
        f.write(to_toml(cfg))


def _run(cmd: list, env: dict) -> int:
    """Run the job with this terminal's output; Ctrl-C reaches every rank through
    mpiexec, and the job's exit status becomes ours."""
    proc = subprocess.Popen(cmd, env=env)
    while True:
        try:
            return _status(proc.wait())
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)


def _status(rc: int) -> int:
    return 128 - rc if rc < 0 else rc


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


if __name__ == "__main__":
    sys.exit(main())

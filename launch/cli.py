"""``distgrad-launch``: validate a config, then run it as an MPI job or in this
process (``--debug``)."""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time

from distgrad.train import checkpoint, records
from distgrad.train.config import ConfigError, differences, load, resume_refusal, to_toml

from . import mpi
from .hostfile import HostError, check_capacity, parse_hostfile, parse_hosts

USAGE_EPILOG = """examples:
  distgrad-launch configs/quickstart.toml
  distgrad-launch configs/gpt_chars.toml train.steps=2000 optim.lr=1e-3 --np 4
  distgrad-launch configs/quickstart.toml --debug          # one process, same loss curve
  distgrad-launch configs/multinode.toml --hostfile hosts.txt --np 16 --dry-run
  distgrad-launch configs/quickstart.toml --resume runs/quickstart-20260101-120000
  distgrad-launch --resume runs/quickstart-20260101-120000 train.steps=400   # train longer
"""

# After Ctrl-C (or SIGTERM), how long the job has to stop before it is forced down.
GRACE_S = float(os.environ.get("DISTGRAD_INTERRUPT_GRACE_S", "10"))


def _parser():
    ap = argparse.ArgumentParser(
        prog="distgrad-launch", description=__doc__, epilog=USAGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", nargs="?", help="the experiment's TOML file (with --resume, default: "
                                             "the run's own config.toml)")
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
    config = args.config
    if args.resume and (config is None or ("=" in config and not os.path.exists(config))):
        # distgrad-launch --resume RUN [key=value ...]: the run's own config
        overrides = ([config] if config else []) + overrides
        config = os.path.join(args.resume, "config.toml")
    if config is None:
        print("distgrad-launch: error: give the config file (or --resume RUN_DIR)", file=sys.stderr)
        return 2
    if args.np is not None:
        overrides.append(f"dist.np={args.np}")
    if args.hostfile:
        overrides.append(f"dist.hostfile={_quote(args.hostfile)}")
    if args.hosts:
        overrides.append(f"dist.hosts={_quote(args.hosts)}")
    if args.launcher:
        overrides.append(f"dist.launcher={_quote(args.launcher)}")
    try:
        cfg = load(config, overrides, world_size=1 if args.debug else None)
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
        run_dir = os.path.abspath(args.resume)
        verdict = _resume_verdict(run_dir, cfg)
        if verdict is not None:
            status, message = verdict
            print(f"distgrad-launch: {'error: ' if status else ''}--resume {args.resume}: {message}",
                  file=sys.stderr if status else sys.stdout)
            return status
    else:
        run_dir = None  # created when the job starts, not by a dry run

    def program(rd):
        return [sys.executable, "-m", "distgrad.train", rd] + (["--resume"] if args.resume else [])

    if args.debug:
        if args.dry_run:
            print(f"would run in this process: {shlex.join(program(run_dir or '<new run directory>'))}")
            return 0
        return _debug_run(cfg, run_dir or records.create_run_dir(cfg["run"]["output_dir"], cfg["run"]["name"]),
                          bool(args.resume))

    flavor = "srun" if d["launcher"] == "srun" else None
    try:
        exe = "srun" if flavor else mpi.find_mpiexec(args.mpiexec)
    except FileNotFoundError as e:
        print(f"distgrad-launch: error: {e}", file=sys.stderr)
        return 2
    flavor = flavor or mpi.detect_flavor(exe)
    ranks_here = d["np"] if not hosts else max(s for _, s in hosts)
    env = _thread_env(os.environ, ranks_here)
    if sys.stdout.isatty():
        # The ranks' stdout is a pipe to mpiexec; rank 0 draws its progress bar for this terminal.
        env["DISTGRAD_TTY"] = "1"
        env["DISTGRAD_COLUMNS"] = str(shutil.get_terminal_size().columns)
    if args.dry_run:
        run_dir = run_dir or os.path.join(cfg["run"]["output_dir"], f"{cfg['run']['name']}-<timestamp>")
    else:
        run_dir = run_dir or records.create_run_dir(cfg["run"]["output_dir"], cfg["run"]["name"])
    # The hostfile is rewritten in the form the MPI in use reads best.
    machinefile = (os.path.join(run_dir, "machinefile") if flavor == "mpich" else os.path.join(run_dir, "hostfile")
                   ) if d["hostfile"] and flavor in ("mpich", "openmpi") else None
    cmd = mpi.build_command(flavor, exe, d["np"], program(run_dir), mpi.exported_env(env), hosts=hosts,
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
    return _report(run_dir, _run(cmd, env))


def _debug_run(cfg: dict, run_dir: str, resume: bool) -> int:
    """The run in this process, importing user code as the ranks do (``python -m``
    puts the current directory first on the path)."""
    import bdb

    from distgrad.train.trainer import NonFiniteStop, ResumeRefused, Trainer

    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    _write_config(run_dir, cfg)
    try:
        Trainer(cfg, run_dir, resume=resume).run()
    except KeyboardInterrupt:
        return 130
    except bdb.BdbQuit:
        print("distgrad-launch: quit from the debugger", file=sys.stderr)
        return 130
    except NonFiniteStop:
        return 1
    except ResumeRefused as e:
        print(f"distgrad-launch: error: {e}", file=sys.stderr)
        return 2
    return 0


def _resume_verdict(run_dir: str, cfg: dict):
    """Why RUN_DIR cannot be resumed with this config, as (exit status, message), or
    (0, message) when the run has nothing left to do; None when it can go on.
    Checked before anything in the run directory is touched."""
    if not os.path.isdir(run_dir):
        return 2, "no such run directory"
    step, damaged = checkpoint.find_resumable(run_dir)
    if step is None:
        why = "; ".join(f"step {s}: {r}" for s, r in damaged) or "it holds no checkpoint"
        return 2, f"no usable checkpoint ({why})"
    with open(checkpoint.paths(run_dir, step)[1]) as f:
        meta = json.load(f)
    saved = meta.get("config")
    refusal = resume_refusal(saved, meta.get("config_hash"), cfg)
    if refusal:
        return 2, (f"its checkpoint (step {step}): {refusal}. Only the length of the run, the "
                   "intervals, progress, checkpoints kept and the dist section may change on "
                   f"resume; resume with the run's own config: distgrad-launch --resume {run_dir}")
    t = cfg["train"]
    total = t["steps"] if t["steps"] is not None else t["epochs"] * meta.get("steps_per_epoch", 0)
    if step >= total:
        return 0, (f"the run has finished (its last checkpoint is of step {step}, and this config "
                   f"trains {total} steps); nothing to do. To train longer: distgrad-launch --resume "
                   f"{run_dir} train.steps=N with N > {step}")
    for k, a, b in (differences(saved, cfg, resumable=True) if saved else []):
        print(f"distgrad-launch: --resume: {k} changes from {a!r} to {b!r}", file=sys.stderr)
    return None


def _write_config(run_dir: str, cfg: dict) -> None:
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "config.toml"), "w") as f:
        f.write(to_toml(cfg))


def _run(cmd: list, env: dict) -> int:
    """Run the job with this terminal's output; the job's exit status becomes ours.
    Ctrl-C (or SIGTERM) is passed on to every rank through mpiexec; a job that has
    not stopped ``GRACE_S`` seconds later (a rank stopped or stuck in native code)
    is forced down, mpiexec and every process it started."""
    # mpiexec in a process group of its own: a Ctrl-C in the terminal reaches the launcher
    # only, which passes exactly one on (Hydra takes a second one as "force abort").
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=os.setpgrp)
    relays = [threading.Thread(target=_relay, args=(src, dst), daemon=True)
              for src, dst in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr))]
    for relay in relays:
        relay.start()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    interrupted_at, forced = None, False
    try:
        while True:
            try:
                rc = proc.wait(timeout=0.2 if interrupted_at else None)
                break
            except subprocess.TimeoutExpired:
                if not forced and time.monotonic() - interrupted_at > GRACE_S:
                    forced = _force_down(proc)
            except KeyboardInterrupt:
                if interrupted_at is None:
                    interrupted_at = time.monotonic()
                    proc.send_signal(signal.SIGINT)
                elif not forced:  # a second Ctrl-C: no more waiting
                    forced = _force_down(proc)
    finally:
        signal.signal(signal.SIGTERM, previous)
    for relay in relays:
        relay.join(5)
    rc = _status(rc)
    return 130 if interrupted_at is not None and rc != 0 else rc


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


# Hydra's own words on Ctrl-C, which the launcher handles itself.
_HYDRA_NOISE = re.compile(rb"[^\n]*(Press Ctrl-C again to force abort|Sending Ctrl-C to processes as "
                          rb"requested)[^\n]*\n?")


def _relay(source, sink) -> None:
    """Pass the job's output on as it comes (progress bars redraw without a newline),
    without Hydra's own Ctrl-C chatter."""
    fd = source.fileno()
    out = sink.buffer if hasattr(sink, "buffer") else sink
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        out.write(_HYDRA_NOISE.sub(b"", chunk))
        out.flush()


def _force_down(proc) -> bool:
    print("distgrad-launch: the job did not stop after the interrupt (a rank may be stopped or stuck); "
          "killing mpiexec and every process it started", file=sys.stderr, flush=True)
    for pid in reversed(_descendants(proc.pid)):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:  # already gone
            continue
    proc.kill()
    return True


def _descendants(pid: int) -> list:
    """``pid`` and every process below it (Linux /proc; just ``pid`` elsewhere)."""
    children = {}
    try:
        entries = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return [pid]
    for p in entries:
        try:
            with open(f"/proc/{p}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(p))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _report(run_dir: str, rc: int) -> int:
    """After the job: make sure summary.json says how it ended, and say it once more."""
    if rc == 0:
        return rc
    summary = records.read_summary(run_dir)
    status = summary.get("status")
    if status == "failed":
        rank = summary.get("failed_rank")
        error = str(summary.get("error")).splitlines()[0]
        print(f"distgrad-launch: the run failed on rank {rank} ({summary.get('failed_host')}) at step "
              f"{summary.get('failed_step')} ({summary.get('failed_phase')}): {error}\n"
              f"distgrad-launch: see {os.path.join(run_dir, f'rank{rank}.log')} and "
              f"{records.summary_path(run_dir)}", file=sys.stderr)
    elif rc == 130 or status == "interrupted":
        if status != "interrupted":
            records.write_summary(run_dir, status="interrupted")
    else:
        error = (f"the job ended with exit status {rc} and no rank recorded why (a rank was killed "
                 "by a signal or the out-of-memory killer, or lost its host?); see the rank*.log files")
        records.write_summary(run_dir, status="failed", error=error)
        print(f"distgrad-launch: {error}", file=sys.stderr)
    return rc


def _status(rc: int) -> int:
    return 128 - rc if rc < 0 else rc


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


if __name__ == "__main__":
    sys.exit(main())

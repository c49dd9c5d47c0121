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
import socket
import subprocess
import sys
import threading
import time

from . import mpi, procs, sweep
from .guard import start_guard, stop_guard
from .hostfile import HostError, check_capacity, parse_hostfile, parse_hosts

HOST = socket.gethostname()


def _import_distgrad() -> None:
    """distgrad (and numpy) are imported once the launcher handles signals, so that a
    Ctrl-C at any moment ends it cleanly."""
    global checkpoint, records, startup, ConfigError, check_imports, differences, load, resume_refusal, to_toml
    os.environ.pop("DISTGRAD_LAUNCHED", None)  # the launcher is no rank, whatever its environment says
    from distgrad.train import checkpoint, records, startup
    from distgrad.train.config import (
        ConfigError,
        check_imports,
        differences,
        load,
        resume_refusal,
        to_toml,
    )

USAGE_EPILOG = """examples:
  distgrad-launch configs/quickstart.toml
  distgrad-launch configs/gpt_chars.toml train.steps=2000 optim.lr=1e-3 --np 4
  distgrad-launch configs/quickstart.toml --debug          # one process, same loss curve
  distgrad-launch configs/multinode.toml --hostfile hosts.txt --np 16 --dry-run
  distgrad-launch configs/quickstart.toml --resume runs/quickstart-20260101-120000
  distgrad-launch --resume runs/quickstart-20260101-120000 train.steps=400   # train longer
  distgrad-launch configs/quickstart.toml --sweep optim.lr=1e-3,3e-3 --sweep model.width=64,128
  distgrad-launch configs/quickstart.toml --trace            # timeline of steps 3-4: RUN/trace.json
"""

# After Ctrl-C (or SIGTERM), how long the job has to stop before it is forced down.
GRACE_S = float(os.environ.get("DISTGRAD_INTERRUPT_GRACE_S", "5"))


def _parser():
    from importlib import metadata

    try:
        version = metadata.version("distgrad")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        version = "unknown"
    ap = argparse.ArgumentParser(
        prog="distgrad-launch", description=__doc__, epilog=USAGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", nargs="?", help="the experiment's TOML file (with --resume, default: "
                                             "the run's own config.toml)")
    ap.add_argument("overrides", nargs="*", metavar="key.path=value",
                    help="override config keys, e.g. train.steps=100 optim.lr=1e-3 model.kwargs.hidden=128")
    ap.add_argument("--np", type=int, help="number of ranks (default: dist.np of the config)")
    hosts = ap.add_mutually_exclusive_group()
    hosts.add_argument("--hostfile", help="hostfile with 'host slots=N' lines, for several machines "
                                          "(replaces the config's dist.hostfile or dist.hosts)")
    hosts.add_argument("--hosts", help="hosts as h1:4,h2:4, for several machines (replaces the config's "
                                       "dist.hosts or dist.hostfile)")
    ap.add_argument("--env", action="append", default=[], metavar="VAR[=VALUE]",
                    help="set VAR for every rank on every host (VAR alone: its value here); repeatable")
    ap.add_argument("--mpiexec-args", metavar="ARGS",
                    help="extra arguments for mpiexec/mpirun/srun, as one string, e.g. "
                         "--mpiexec-args='-iface eth0' (default: dist.mpiexec_args)")
    ap.add_argument("--launcher", choices=("mpiexec", "srun"), help="how to start the ranks (default: dist.launcher)")
    ap.add_argument("--mpiexec", help="the mpiexec/mpirun to use (default: next to this Python, else on PATH)")
    ap.add_argument("--debug", action="store_true", help="run in this process (world size 1; pdb works)")
    ap.add_argument("--dry-run", action="store_true",
                    help="prepare the run directory and print the command that starts it, without starting it")
    ap.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    ap.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
                    help="run the config once for every value (repeat for a grid: every combination), "
                         "one job after another, each run named by its values; ends with a comparison "
                         "table and a plot of the curves in the output directory")
    ap.add_argument("--trace", action="store_true",
                    help="record a timeline of steps 3-4 (or the last steps of a shorter run) into the run "
                         "directory's trace.json (open it in https://ui.perfetto.dev); sets train.trace_steps")
    ap.add_argument("--trace-steps", metavar="STEPS",
                    help="record a timeline of these steps, e.g. 5, 5-7 or 3,8-9 (sets train.trace_steps)")
    ap.add_argument("--version", action="version", version=f"distgrad-launch (distgrad {version})")
    return ap


class _Refused(Exception):
    """Problems found before anything started; each is one line of the message."""

    def __init__(self, problems: list):
        super().__init__("\n".join(problems))
        self.problems = problems


def _overrides(args, config_given: bool) -> tuple:
    """The command line's overrides (flags become config keys) and its own problems."""
    overrides, problems = list(args.overrides), []
    if args.np is not None:
        overrides.append(f"dist.np={args.np}")
    if args.hostfile:
        overrides.append(f"dist.hostfile={_quote(args.hostfile)}")
    if args.hosts:
        overrides.append(f"dist.hosts={_quote(args.hosts)}")
    if args.launcher:
        overrides.append(f"dist.launcher={_quote(args.launcher)}")
    for item in args.env:
        name, eq, value = item.partition("=")
        if not eq:
            if name not in os.environ:
                problems.append(f"--env {name}: {name} is not set here; give --env {name}=VALUE")
                continue
            value = os.environ[name]
        overrides.append(f"dist.env.{name}={_quote(value)}")
    if args.trace_steps is not None:
        from distgrad.train.tracing import parse_steps

        try:
            overrides.append(f"train.trace_steps={parse_steps(args.trace_steps)}")
        except ValueError as e:
            problems.append(f"--trace-steps {args.trace_steps}: {e}")
    if args.mpiexec_args is not None:
        try:
            extra = shlex.split(args.mpiexec_args)
        except ValueError as e:
            problems.append(f"--mpiexec-args {args.mpiexec_args!r}: {e}")
        else:
            overrides.append("dist.mpiexec_args=[" + ", ".join(map(_quote, extra)) + "]")
    return overrides, problems


def _validate(args, config: str, overrides: list, problems: list) -> tuple:
    """Everything checked before anything starts: the config, the hosts, the user code
    it names, the launcher. Every problem is reported, not only the first."""
    cfg = hosts = None
    try:
        cfg = load(config, overrides, world_size=1 if args.debug else None)
    except ConfigError as e:
        problems += getattr(e, "errors", None) or [str(e)]
    if cfg is not None:
        d = cfg["dist"]
        try:
            if d["hostfile"]:
                hosts = parse_hostfile(d["hostfile"])
            elif d["hosts"]:
                hosts = parse_hosts(d["hosts"])
            if hosts and not args.debug and d["launcher"] != "srun":
                check_capacity(hosts, d["np"])
        except HostError as e:
            problems += getattr(e, "errors", None) or [str(e)]
        problems += check_imports(cfg)
        if not args.debug and d["launcher"] != "srun":
            try:
                mpi.find_mpiexec(args.mpiexec)
            except FileNotFoundError as e:
                problems.append(str(e))
    if problems:
        raise _Refused(problems)
    return cfg, hosts


def main(argv=None) -> int:
    """The launcher; its exit status: 0 done, 1 failed, 2 refused (config, resume,
    start-up), 128+N stopped by signal N (130 for Ctrl-C, 143 for SIGTERM)."""
    args = _parser().parse_intermixed_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    handlers = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: _on_signal, signal.SIGHUP: _on_signal}
    previous = {s: signal.signal(s, h) for s, h in handlers.items()} if in_main_thread else {}
    try:
        _import_distgrad()
        return _sweep(args) if args.sweep else _main(args)
    except KeyboardInterrupt as stop:
        signum = getattr(stop, "signum", signal.SIGINT)
        print(f"distgrad-launch: {signal.Signals(signum).name} received before the job started; "
              "nothing was started", file=sys.stderr)
        return 128 + signum
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _sweep(args) -> int:
    axes, problems = sweep.parse(args.sweep)
    if args.resume:
        problems.append("--sweep starts new runs; it cannot be combined with --resume")
    if args.config is None:
        problems.append("--sweep needs the config file")
    if problems:
        print("distgrad-launch: error: " + "\n  ".join(problems), file=sys.stderr)
        return 2

    def validate(a):
        overrides, problems = _overrides(a, True)
        return _validate(a, a.config, overrides, problems)[0]

    return sweep.run(args, axes, validate, _main, _Refused)


def _main(args) -> int:
    config = args.config
    if args.resume and (config is None or ("=" in config and not os.path.exists(config))):
        # distgrad-launch --resume RUN [key=value ...]: the run's own config
        args.overrides = ([config] if config else []) + args.overrides
        config = os.path.join(args.resume, "config.toml")
    if config is None:
        print("distgrad-launch: error: give the config file (or --resume RUN_DIR)", file=sys.stderr)
        return 2
    overrides, problems = _overrides(args, config is not None)
    try:
        cfg, hosts = _validate(args, config, overrides, problems)
    except _Refused as e:
        head = "error: " if len(e.problems) == 1 else f"error: {len(e.problems)} problems:\n  "
        print("distgrad-launch: " + head + "\n  ".join(p.replace("\n", "\n    ") for p in e.problems),
              file=sys.stderr)
        return 2
    d = cfg["dist"]
    if args.trace and args.trace_steps is None:
        # Steps 3-4: the first builds the buckets and the second settles; a shorter run
        # traces its last two steps.
        last = cfg["train"]["steps"] or 4
        cfg["train"]["trace_steps"] = sorted({max(1, min(3, last - 1)), min(4, last)})

    if args.resume:
        run_dir = os.path.abspath(args.resume)
        verdict = _resume_verdict(run_dir, cfg)
        if verdict is not None:
            status, message = verdict
            print(f"distgrad-launch: {'error: ' if status else ''}--resume {args.resume}: {message}",
                  file=sys.stderr if status else sys.stdout)
            return status
    else:
        run_dir = None

    if args.debug:
        if args.dry_run:
            program = [sys.executable, "-m", "distgrad.train", run_dir or "<new run directory>"]
            print(f"would run in this process: {shlex.join(program)}")
            return 0
        return _debug_run(cfg, run_dir or _new_run_dir(cfg, overrides, args), bool(args.resume))

    flavor = "srun" if d["launcher"] == "srun" else None
    exe = "srun" if flavor else mpi.find_mpiexec(args.mpiexec)
    flavor = flavor or mpi.detect_flavor(exe)
    job_env = dict(d["env"])
    job_env.setdefault("DISTGRAD_THREADS", os.environ.get("DISTGRAD_THREADS", "auto"))
    job_env["DISTGRAD_LAUNCHED"] = "1"
    env = {**os.environ, **job_env}
    if sys.stdout.isatty() and not args.dry_run:
        # The ranks' stdout is a pipe to mpiexec; rank 0 draws its progress bar for this terminal.
        env["DISTGRAD_TTY"] = "1"
        env["DISTGRAD_COLUMNS"] = str(shutil.get_terminal_size().columns)
    if args.dry_run and args.resume and overrides:
        print("distgrad-launch: note: the printed command resumes with the run's config.toml as it is; "
              "the overrides are written into it only when the launcher starts the run", file=sys.stderr)
    elif not args.resume:
        run_dir = _new_run_dir(cfg, overrides, args)
    if not (args.dry_run and args.resume):
        _write_config(run_dir, cfg)
    program = [sys.executable, "-m", "distgrad.train", run_dir] + (["--resume"] if args.resume else [])
    if os.path.exists(os.path.join(run_dir, "config.toml")):
        program += ["--config-digest", startup.digest(os.path.join(run_dir, "config.toml"))]
    program += ["--startup-timeout", f"{d['timeout_s']:g}"]
    cmd = mpi.build_command(flavor, exe, d["np"], program, env=job_env, hosts=hosts,
                            extra_args=d["mpiexec_args"], forward=mpi.forwarded_names(env),
                            is_root=hasattr(os, "geteuid") and os.geteuid() == 0,
                            srun_mpi=mpi.srun_mpi_type(sys.executable, env, d["mpiexec_args"])
                            if flavor == "srun" else None)
    for line in _placement_lines(flavor, hosts, d["np"]) + [_threads_line(job_env, hosts, d["np"], flavor)]:
        print(f"distgrad-launch: {line}", file=sys.stderr)
    if args.dry_run:
        # The command alone on stdout (it runs as printed: distgrad-launch ... --dry-run > job.sh).
        if not args.resume:
            print(f"distgrad-launch: prepared {run_dir} (its config.toml); this command starts it as "
                  "distgrad-launch would (delete the folder if you do not run it):", file=sys.stderr)
        print(shlex.join(cmd))
        return 0
    print(f"distgrad-launch: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    status, stopped_by, deaths = _run(cmd, env)
    return _report(run_dir, status, stopped_by, deaths)


def _new_run_dir(cfg: dict, overrides: list, args) -> str:
    """A new run directory named by the config's run.name and the command line's
    overrides, listed in the output directory's index.jsonl."""
    run_dir = records.create_run_dir(cfg["run"]["output_dir"], cfg["run"]["name"], overrides)
    args.created_run_dir = run_dir
    records.append_index(cfg["run"]["output_dir"], run_dir, config=cfg["run"]["name"],
                         config_file=os.path.abspath(args.config) if args.config else None,
                         overrides=[o for o in overrides if not o.startswith("run.output_dir=")],
                         started=time.time(), sweep=getattr(args, "sweep_id", None),
                         mode="debug" if args.debug else "dry-run" if args.dry_run else "job")
    return run_dir


def _placement_lines(flavor: str, hosts, nprocs: int) -> list:
    if flavor == "srun":
        return [f"{nprocs} ranks placed by Slurm" + (f" on {', '.join(h for h, _ in hosts)}" if hosts else "")]
    if not hosts:
        return [f"{nprocs} ranks on this host ({HOST})"]
    where = mpi.placement(hosts, nprocs)
    parts = [f"{h}: ranks {_span(r)}" if r else f"{h}: none" for h, r in where]
    lines = [f"placing {nprocs} ranks by slot, filling each host in order: {'; '.join(parts)}"]
    idle = [h for h, r in where if not r]
    short = [(h, s - len(r)) for (h, r), (_, s) in zip(where, hosts) if r and len(r) < s]
    if idle or short:
        lines.append(f"note: {nprocs} ranks use {nprocs} of {sum(s for _, s in hosts)} slots"
                     + (f"; {', '.join(idle)} get{'s' if len(idle) == 1 else ''} no rank" if idle else "")
                     + "; raise --np to use them all")
    return lines


def _span(ranks: list) -> str:
    return str(ranks[0]) if len(ranks) == 1 else f"{ranks[0]}-{ranks[-1]}"


def _threads_line(job_env: dict, hosts, nprocs: int, flavor: str) -> str:
    from distgrad import _threads

    fixed = [v for v in _threads.THREAD_VARS if v in os.environ]
    if fixed:
        return "threads per rank: " + ", ".join(f"{v}={os.environ[v]}" for v in fixed) + " (set here, forwarded)"
    want = job_env["DISTGRAD_THREADS"]
    if want.isdigit():
        return f"threads per rank: {want} (DISTGRAD_THREADS)"
    cores = _threads.available_cores()
    here = nprocs if not hosts else next((len(r) for h, r in mpi.placement(hosts, nprocs)
                                          if h in (HOST, HOST.split(".")[0], "localhost")), None)
    if flavor == "srun" or here is None:
        return ("threads per rank: set on each host to its cores / its ranks (this host has "
                f"{cores} cores)")
    return (f"threads per rank: set on each host to its cores / its ranks (here: {cores} cores / "
            f"{here} ranks = {_threads.per_rank(cores, here)})")


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
    except KeyboardInterrupt as stop:
        return 128 + getattr(stop, "signum", signal.SIGINT)
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


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Stop(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP: the launcher stops the job (and a debug run stops
    as on Ctrl-C)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum, frame):
    raise _Stop(signum)


def _run(cmd: list, env: dict) -> tuple:
    """Run the job with this terminal's output; (exit status, the signal that stopped
    it or None, [(pid, host, rank, how)] of ranks mpiexec saw die).

    SIGINT (Ctrl-C), SIGTERM and SIGHUP are passed on to every rank as one Ctrl-C
    through mpiexec; a job that has not stopped ``GRACE_S`` seconds later (a rank
    stopped or stuck in native code) is forced down, mpiexec and every process it
    started. A guard process (``launch.guard``) does the same if this launcher is
    killed outright."""
    previous = {s: signal.signal(s, _on_signal) for s in _SIGNALS}
    stopped_by, forced, proc, guard, relays = None, False, None, None, []
    watch = _Watch()
    try:
        # mpiexec in a session of its own: a Ctrl-C in the terminal reaches the launcher
        # only, which passes exactly one on (Hydra takes a second one as "force abort").
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        guard = start_guard(proc.pid, GRACE_S, keep=(proc.stdout.fileno(), proc.stderr.fileno()))
        relays = [threading.Thread(target=_relay, args=(src, dst, watch), daemon=True)
                  for src, dst in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr))]
        for relay in relays:
            relay.start()
        started = None
        while True:
            try:
                rc = proc.wait(timeout=0.2 if stopped_by else None)
                break
            except subprocess.TimeoutExpired:
                if not forced and time.monotonic() - started > GRACE_S:
                    forced = _force_down(proc)
            except _Stop as stop:
                if stopped_by is None:
                    stopped_by, started = stop.signum, time.monotonic()
                    watch.stopping = True
                    print(f"distgrad-launch: {signal.Signals(stop.signum).name} received: stopping every "
                          f"rank on every host (forced after {GRACE_S:g} s)", file=sys.stderr, flush=True)
                    proc.send_signal(signal.SIGINT)
                elif not forced:  # a second signal: no more waiting
                    forced = _force_down(proc)
    except _Stop as stop:  # before mpiexec started
        if proc is not None:
            procs.kill_all(procs.tree(proc.pid))
            proc.wait()
        return 128 + stop.signum, stop.signum, []
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if guard is not None:
            stop_guard(guard)
    for relay in relays:
        relay.join(5)
    return _status(rc), stopped_by, watch.deaths


# Hydra's own words on Ctrl-C, which the launcher handles itself, and its proxies'
# assertion noise when the job is torn down.
_HYDRA_NOISE = re.compile(rb"[^\n]*(Press Ctrl-C again to force abort|Sending Ctrl-C to processes as "
                          rb"requested|assert \(!closed\) failed|HYDU_sock_write \(|"
                          rb"error waiting for event|launcher returned error waiting for completion)[^\n]*\n?")
# Hydra's report of ranks that ended on the interrupt the launcher passed on itself.
_HYDRA_BLOCK_LINE = re.compile(rb"^(=+|=   .*|YOUR APPLICATION TERMINATED WITH THE EXIT STRING.*|This typically "
                               rb"refers to a problem with your application\.|Please see the FAQ page for "
                               rb"debugging suggestions)\n", re.MULTILINE)
_HYDRA_PID = re.compile(r"PID (\d+) RUNNING AT (\S+)")
_HYDRA_CODE = re.compile(r"EXIT CODE: (\d+)")
_OMPI_DEATH = re.compile(r"process rank (\d+) with PID (\d+) on node (\S+) exited on signal (\d+)")


class _Watch:
    """What mpiexec says of ranks that died (Hydra: 'PID n RUNNING AT host' then
    'EXIT CODE: c'; Open MPI: 'process rank r with PID n on node h exited on signal s')."""

    def __init__(self):
        self.deaths = []   # (pid, host, rank or None, exit code, or -signal)
        self.stopping = False
        self.lock = threading.Lock()
        self._pending = None

    def line(self, text: str) -> None:
        with self.lock:
            m = _HYDRA_PID.search(text)
            if m:
                self._pending = (int(m.group(1)), m.group(2))
                return
            m = _HYDRA_CODE.search(text)
            if m and self._pending:
                self.deaths.append((*self._pending, None, int(m.group(1))))
                self._pending = None
                return
            m = _OMPI_DEATH.search(text)
            if m:
                self.deaths.append((int(m.group(2)), m.group(3), int(m.group(1)), -int(m.group(4))))


def _relay(source, sink, watch: _Watch) -> None:
    """Pass the job's output on as it comes (progress bars redraw without a newline),
    without Hydra's own Ctrl-C chatter, noting what mpiexec says of dead ranks."""
    fd = source.fileno()
    out = sink.buffer if hasattr(sink, "buffer") else sink
    tail = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        shown = _HYDRA_NOISE.sub(b"", chunk)
        if watch.stopping:
            shown = _HYDRA_BLOCK_LINE.sub(b"", shown)
        out.write(shown)
        out.flush()
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()[-4096:]
        for line in lines:
            if b"PID" in line or b"EXIT CODE" in line:
                watch.line(line.decode(errors="replace"))


def _force_down(proc) -> bool:
    print("distgrad-launch: the job did not stop in time (a rank may be stopped or stuck); killing "
          "mpiexec and every process it started", file=sys.stderr, flush=True)
    procs.kill_all(procs.tree(proc.pid))
    return True


def _report(run_dir: str, rc: int, stopped_by, deaths: list) -> int:
    """After the job: make sure summary.json says how it ended, say it once more, and
    give the exit status: 0 done, 1 failed, 2 refused, 128+N stopped by signal N."""
    summary = records.read_summary(run_dir)
    status = summary.get("status")
    if stopped_by is not None:
        if rc == 0 and status == "completed":
            return 0
        if status not in ("failed", "completed"):
            records.write_summary(run_dir, status="interrupted")
        print(f"distgrad-launch: stopped by {signal.Signals(stopped_by).name}; " + _checkpoint_line(run_dir),
              file=sys.stderr)
        return 128 + stopped_by
    if rc == 0:
        return 0
    if status == "failed":
        rank = summary.get("failed_rank")
        if summary.get("failed_phase") == "startup":  # before any rank kept a log: all of it
            print(f"distgrad-launch: the run could not start: {summary.get('error')}", file=sys.stderr)
            return 2
        error = str(summary.get("error")).splitlines()[0]
        print(f"distgrad-launch: the run failed on rank {rank} ({summary.get('failed_host')}) at step "
              f"{summary.get('failed_step')} ({summary.get('failed_phase')}): {error}\n"
              f"distgrad-launch: see {os.path.join(run_dir, f'rank{rank}.log')} and "
              f"{records.summary_path(run_dir)}", file=sys.stderr)
        return rc if rc in (1, 2) else 1
    if status == "interrupted":
        return 130
    named = _name_deaths(run_dir, deaths)
    if named:
        rank, host, error = named
        records.write_summary(run_dir, status="failed", error=error, failed_rank=rank, failed_host=host)
    else:
        error = (f"the job ended with exit status {rc} and no rank recorded why (a rank was killed "
                 "by a signal or the out-of-memory killer, or lost its host?); see the rank*.log files")
        records.write_summary(run_dir, status="failed", error=error)
    print(f"distgrad-launch: {error}\ndistgrad-launch: " + _checkpoint_line(run_dir), file=sys.stderr)
    return rc if rc in (1, 2) else 1


# Exit codes Hydra reports for a rank that a signal ended (the signal's number).
_SIGNAL_CODES = {int(s) for s in (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS,
                                  signal.SIGTERM, signal.SIGILL, signal.SIGFPE, signal.SIGINT)}


def _name_deaths(run_dir: str, deaths: list):
    """(rank, host, message) for the first rank mpiexec saw die, named from the
    start-up record of every rank's host and pid."""
    if not deaths:
        return None
    ranks = startup.read_ranks(run_dir)
    pid, host, rank, code = deaths[0]
    if rank is None:
        same = [e for e in ranks if e.get("pid") == pid]
        exact = [e for e in same if e.get("host") == host]
        if exact or len(same) == 1:
            rank = (exact or same)[0].get("rank")
    who = f"rank {rank} ({host}, pid {pid})" if rank is not None else f"a rank (pid {pid} on {host})"
    signum = -code if code < 0 else code if code in _SIGNAL_CODES else None
    if signum:
        hint = " (kill -9, or the out-of-memory killer: see dmesg on that host)" if signum == signal.SIGKILL else ""
        how = f"was killed by signal {signum} ({signal.Signals(signum).name}){hint}"
    else:
        how = f"exited with status {code} without saying why"
    return rank, host, f"{who} {how}; mpiexec ended the job"


def _checkpoint_line(run_dir: str) -> str:
    step, _ = checkpoint.find_resumable(run_dir)
    if step is None:
        return f"no checkpoint was saved in {run_dir}"
    return f"the last checkpoint is of step {step} in {run_dir}; to go on: distgrad-launch --resume {run_dir}"


def _status(rc: int) -> int:
    return 128 - rc if rc < 0 else rc


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


if __name__ == "__main__":
    sys.exit(main())

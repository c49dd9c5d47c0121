"""What each rank runs: ``python -m distgrad.train RUN_DIR [--resume]``.

The launcher has already validated the config and written it, resolved for the
number of ranks it starts, to RUN_DIR/config.toml; this reads it back and trains.

Exit status: 0 when the run completed (or had nothing left to do), 1 when it
stopped on non-finite values, 2 when the config or the resume was refused, 130
on Ctrl-C. Any other failure aborts the whole job with a message naming the rank.
"""
import argparse
import os
import signal
import sys
import threading

from .config import ConfigError, load
from .startup import (
    StartupFailed,
    check_run_dir,
    handshake,
    launched_rank,
    launched_size,
)
from .trainer import NonFiniteStop, ResumeRefused, Trainer


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m distgrad.train", description=__doc__)
    ap.add_argument("run_dir")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--config-digest", help="the digest of the config.toml the launcher wrote (each rank "
                                            "checks that it reads the same file)")
    ap.add_argument("--startup-timeout", type=float, default=600.0,
                    help="seconds the ranks wait for each other at start-up")
    args = ap.parse_args(argv)
    run_dir = os.path.abspath(args.run_dir)
    problem = check_run_dir(run_dir, args.config_digest)
    cfg = None
    if problem is None:
        try:
            cfg = load(os.path.join(run_dir, "config.toml"))
        except ConfigError as e:
            problem = str(e)
    if launched_size() > 1:
        # Every rank reports to rank 0 before anything else, so a rank that cannot run
        # is named (with its host) and nobody waits for it.
        try:
            handshake(run_dir, problem, args.startup_timeout)
        except StartupFailed as e:
            if launched_rank() == 0:
                print(e, file=sys.stderr, flush=True)
            sys.exit(2)
    elif problem:
        sys.exit(f"distgrad: {problem}")
    from .. import distributed as dist
    from ..distributed import failure, monitor

    # From here on an interruption is recorded (summary, last checkpoint named).
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        Trainer(cfg, run_dir, resume=args.resume).run()
    except KeyboardInterrupt:
        # Leave at once: a normal exit would finalize MPI while the reducer's
        # communication thread may still be inside it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    except (NonFiniteStop, ResumeRefused) as e:
        # Every rank stops here together (they decided on the same values): no abort.
        if isinstance(e, ResumeRefused) and dist.is_initialized() and dist.get_rank() == 0:
            print(f"distgrad: {e}", file=sys.stderr, flush=True)
        monitor.leave(f"stopped: {type(e).__name__}", together=True)
        sys.exit(1 if isinstance(e, NonFiniteStop) else 2)
    except SystemExit as e:
        if dist.is_initialized() and dist.get_world_size() > 1:
            failure.abort_job(f"sys.exit({e.code!r}) was called at {monitor.describe()}, before the run "
                              "finished; the other ranks would wait for this one forever")
        raise
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

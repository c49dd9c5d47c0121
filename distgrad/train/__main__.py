"""What each rank runs: ``python -m distgrad.train RUN_DIR [--resume]``.

The launcher has already validated the config and written it, resolved for the
number of ranks it starts, to RUN_DIR/config.toml; this reads it back and trains.

Exit status: 0 when the run completed (or had nothing left to do), 1 when it
stopped on non-finite values, 2 when the config or the resume was refused, 130
on Ctrl-C. Any other failure aborts the whole job with a message naming the rank.
"""
import argparse
import os
import socket
import sys

from .config import ConfigError, load
from .trainer import NonFiniteStop, ResumeRefused, Trainer


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m distgrad.train", description=__doc__)
    ap.add_argument("run_dir")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    rank = os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
    try:
        cfg = load(os.path.join(args.run_dir, "config.toml"))
    except ConfigError as e:
        # Before MPI starts: nothing to abort, but say who could not read what.
        sys.exit(f"distgrad: rank {rank} on {socket.gethostname()}: {e} (every rank must see the "
                 "run directory: put it on a filesystem all hosts share)")
    from .. import distributed as dist
    from ..distributed import failure, monitor

    try:
        Trainer(cfg, args.run_dir, resume=args.resume).run()
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
        monitor.leave(f"stopped: {type(e).__name__}")
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

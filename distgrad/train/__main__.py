"""What each rank runs: ``python -m distgrad.train RUN_DIR [--resume]``.

The launcher has already validated the config and written it, resolved for the
number of ranks it starts, to RUN_DIR/config.toml; this reads it back and trains.
"""
import argparse
import os
import sys

from .config import ConfigError, load
from .trainer import Trainer


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m distgrad.train", description=__doc__)
    ap.add_argument("run_dir")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    try:
        cfg = load(os.path.join(args.run_dir, "config.toml"))
    except ConfigError as e:
        sys.exit(f"distgrad: {e}")
    try:
        Trainer(cfg, args.run_dir, resume=args.resume).run()
    except KeyboardInterrupt:
        # Leave at once: a normal exit would finalize MPI while the reducer's
        # communication thread may still be inside it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)


if __name__ == "__main__":
    main()

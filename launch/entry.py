"""The ``distgrad-launch`` console script's first module. Until the launcher takes
over its signals (loading its modules takes a moment), SIGINT, SIGTERM and SIGHUP
end it at once and quietly: nothing has started yet."""
import os
import signal
import sys


def _before_start(signum, frame):
    sys.stderr.write(f"distgrad-launch: {signal.Signals(signum).name} received before the job started; "
                     "nothing was started\n")
    os._exit(128 + signum)


for _sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, _before_start)


def main() -> int:
    from launch.cli import main as launch

    return launch()

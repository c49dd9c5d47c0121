"""distgrad-runs: list the runs in an output directory, compare their configs and
final metrics, plot their loss curves, draw a run's timeline."""
from __future__ import annotations

import argparse
import json
import sys

from distgrad.train import runs as R

EPILOG = """examples:
  distgrad-runs list                                   # the runs in runs/
  distgrad-runs compare runs --sort eval_loss          # every run in runs/, best first
  distgrad-runs compare runs/a-20260101-120000 runs/b-20260101-130000 --sort=-tokens_per_s
  distgrad-runs plot runs -o curves.png --x tokens
  distgrad-runs plot runs -o curves.png --x all --metric loss --metric grad_norm
  distgrad-runs timeline runs/quickstart-20260101-120000 -o timeline.png   # its trace.json

RUN is a run directory, or an output directory meaning every run in it. compare's
columns are the config keys that differ between the runs (run.output_dir, where a run
was written, is never one) and the final metrics. plot needs matplotlib:
pip install "distgrad[plot]".
"""
RUN_HELP = "a run directory, or an output directory (every run in it)"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="distgrad-runs", description=__doc__, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="{list,compare,plot,timeline}")

    ls = sub.add_parser("list", help="one line per run: status, steps, final losses, overrides",
                        description="One line per run, oldest first: status (running, completed, failed, "
                                    "interrupted; unknown without a readable summary.json), steps done / "
                                    "total, final train and eval loss, world size, wall time, overrides.")
    ls.add_argument("paths", nargs="*", default=["runs"], metavar="OUTPUT_DIR",
                    help="output directories or run directories (default: runs)")
    ls.add_argument("--json", action="store_true", help="a JSON object per line, with every detail")

    cmp = sub.add_parser("compare", help="a table of the config keys that differ and the final metrics",
                         description="A row per run; columns: the config keys (dotted, e.g. optim.lr) "
                                     "whose values differ between the runs, then status, steps, loss, "
                                     "eval_loss and eval_accuracy (when some run has them), wall_time_s, "
                                     "tokens_per_s.")
    cmp.add_argument("paths", nargs="+", metavar="RUN", help=RUN_HELP)
    cmp.add_argument("--sort", metavar="COLUMN",
                     help="order by this column; descending with --desc or a leading '-' "
                          "(write --sort=-loss); missing values come last")
    cmp.add_argument("--desc", action="store_true", help="sort in descending order")
    fmt = cmp.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="a JSON object per line")
    fmt.add_argument("--csv", action="store_true", help="comma-separated values with a header")

    pl = sub.add_parser("plot", help="loss curves of one or several runs, as a PNG",
                        description="Curves of each run (one colour per run, one line style per metric: "
                                    "the first solid, the next dashed), labelled by the config keys that "
                                    "differ between the runs (one run: its name). Needs matplotlib: "
                                    'pip install "distgrad[plot]".')
    pl.add_argument("paths", nargs="+", metavar="RUN", help=RUN_HELP)
    pl.add_argument("-o", "--output", required=True, metavar="FILE.png", help="where to write the picture")
    pl.add_argument("--x", default="step", choices=(*R.X_AXES, "all"),
                    help="the x axis: step (default), tokens, time (wall time in seconds), or all: "
                         "three panels side by side")
    pl.add_argument("--metric", action="append", metavar="NAME",
                    help="a metrics column to draw, e.g. loss, eval_loss, eval_accuracy, grad_norm, "
                         "lr, tokens_per_s; repeatable (default: loss and eval_loss)")
    pl.add_argument("--width", type=int, metavar="PIXELS",
                    help="picture width (default: 960, or 1800 with --x all)")
    pl.add_argument("--height", type=int, default=600, metavar="PIXELS", help="picture height (default: 600)")
    pl.add_argument("--dpi", type=int, default=100, help="dots per inch: the size of text and lines "
                                                         "relative to the picture (default: 100)")
    pl.add_argument("--title", help="a title above the plot")

    tl = sub.add_parser("timeline", help="a run's trace (trace.json) as a PNG: each rank's phases and "
                                         "its gradient buckets' all-reduces on one time axis",
                        description="Draws what train.trace_steps (or distgrad-launch --trace) recorded: "
                                    "per rank, the main thread's data, forward, backward, optimizer, "
                                    "evaluation and checkpoint phases with a tick where each gradient "
                                    "bucket became ready, and the communication thread's all-reduces. "
                                    "Open the same trace.json in https://ui.perfetto.dev to explore it. "
                                    'Needs matplotlib: pip install "distgrad[plot]".')
    tl.add_argument("path", metavar="RUN", help="a run directory with a trace.json, or a trace file")
    tl.add_argument("-o", "--output", required=True, metavar="FILE.png", help="where to write the picture")
    tl.add_argument("--step", type=int, action="append", metavar="N",
                    help="draw this traced step (repeatable; default: every traced step)")
    tl.add_argument("--width", type=int, default=1200, metavar="PIXELS", help="picture width (default: 1200)")
    tl.add_argument("--height", type=int, metavar="PIXELS", help="picture height (default: from the ranks)")
    tl.add_argument("--dpi", type=int, default=100, help="dots per inch (default: 100)")
    tl.add_argument("--title", help="a title above the picture")
    return ap


def _note_problems(runs) -> None:
    for r in runs:
        if r.problems:
            print(f"distgrad-runs: note: {r.dir}: {'; '.join(r.problems)}", file=sys.stderr)


def _list(args) -> None:
    runs = R.find_runs(args.paths)
    _note_problems(runs)
    if args.json:
        for r in runs:
            print(json.dumps({"run_dir": r.dir, "name": r.name, "status": r.status, "steps": r.steps,
                              "total_steps": r.total_steps, "loss": r.final("loss"),
                              "eval_loss": r.final("eval_loss"), "world_size": r.summary.get("world_size"),
                              "wall_time_s": r.wall_time_s, "started": r.started,
                              "overrides": r.overrides, "problems": r.problems}))
        return
    print(R.format_table(R.list_rows(runs)))


def _compare(args) -> None:
    runs = R.find_runs(args.paths)
    _note_problems(runs)
    rows = R.compare_rows(runs)
    if args.sort:
        rows = R.sort_rows(rows, args.sort.lstrip("-"), descending=args.desc or args.sort.startswith("-"))
    if args.json:
        print("\n".join(json.dumps(r) for r in rows))
    elif args.csv:
        print(R.format_csv(rows), end="")
    else:
        print(R.format_table(rows))


def _plot(args) -> None:
    if min(args.width or 1, args.height, args.dpi) <= 0:
        raise R.RunsError("--width, --height and --dpi must be positive")
    width = args.width or (1800 if args.x == "all" else 960)
    runs = R.find_runs(args.paths)
    _note_problems(runs)
    drawn = R.plot_runs(runs, args.output, x=args.x, metrics=tuple(args.metric or ("loss", "eval_loss")),
                        width=width, height=args.height, dpi=args.dpi, title=args.title)
    if not drawn["curves"]:
        raise R.RunsError(f"nothing to draw: no run has metrics rows with {', '.join(args.metric or ['loss'])} "
                          f"(the picture {args.output} is empty)")
    print(f"wrote {args.output} ({drawn['curves']} curves, {width}x{args.height} pixels)")


def _timeline(args) -> None:
    from distgrad.train.timeline import plot_trace

    if min(args.width, args.height or 1, args.dpi) <= 0:
        raise R.RunsError("--width, --height and --dpi must be positive")
    drawn = plot_trace(args.path, args.output, steps=args.step, width=args.width, height=args.height,
                       dpi=args.dpi, title=args.title)
    print(f"wrote {args.output} (steps {', '.join(map(str, drawn['steps']))} of ranks "
          f"{', '.join(map(str, drawn['ranks']))}: {drawn['bars']} bars)")


def main(argv=None) -> int:
    """The command; its exit status: 0 done, 2 bad input (a message says what)."""
    args = _parser().parse_args(argv)
    try:
        {"list": _list, "compare": _compare, "plot": _plot, "timeline": _timeline}[args.command](args)
    except R.RunsError as e:
        print(f"distgrad-runs: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

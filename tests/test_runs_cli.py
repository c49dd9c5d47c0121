"""``distgrad-runs`` (list, compare, plot) on real runs: three tiny quickstart runs made
in this process by ``distgrad-launch --debug``, differing in optim.lr and model.width;
and copies of them damaged the way a killed run or a lost file leaves them."""
import csv
import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from distgrad.train import runs as R
from launch.cli import main as launch
from launch.runs_cli import main as runs_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(REPO, "configs", "quickstart.toml")
COMMON = ["train.steps=4", "train.progress=false", "train.eval_interval=2", "data.max_bytes=20000"]
# What sets the runs apart: the keys a comparison must show, and only those.
VARIANTS = [["optim.lr=1e-3", "model.width=64"], ["optim.lr=3e-3", "model.width=64"],
            ["optim.lr=1e-3", "model.width=32"]]
DIFFERING = {"optim.lr", "model.width"}


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    """An output directory with the three runs, and an index.jsonl naming their overrides
    (written here where the launcher does not write one)."""
    out = str(tmp_path_factory.mktemp("runs"))
    for variant in VARIANTS:
        assert launch([QUICKSTART, "--debug", f"run.output_dir={out}", *COMMON, *variant]) == 0
    if not os.path.exists(os.path.join(out, "index.jsonl")):
        with open(os.path.join(out, "index.jsonl"), "w") as f:
            for name, variant in zip(_dirs(out), VARIANTS):
                run_dir = os.path.join(out, name)
                f.write(json.dumps({"run_dir": run_dir, "name": name, "config": "quickstart",
                                    "overrides": variant, "started": _summary(run_dir)["started"],
                                    "sweep": None}) + "\n")
    return out


def _dirs(out):
    """The run directories in ``out``, oldest first (by the start their summaries record)."""
    names = [d for d in os.listdir(out) if os.path.isdir(os.path.join(out, d))]
    return sorted(names, key=lambda d: _summary(os.path.join(out, d))["started"])


def _summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


def _rows(run_dir):
    with open(os.path.join(run_dir, "metrics.rank0.jsonl")) as f:
        return [json.loads(line) for line in f]


def _last(run_dir, key):
    return [r[key] for r in _rows(run_dir) if key in r][-1]


def _cli(capsys, *argv):
    status = runs_cli(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _damaged_copy(out, tmp_path):
    """A copy of the first run with no summary.json and a torn last metrics line."""
    run_dir = str(tmp_path / "damaged")
    shutil.copytree(os.path.join(out, _dirs(out)[0]), run_dir)
    os.remove(os.path.join(run_dir, "summary.json"))
    with open(os.path.join(run_dir, "metrics.rank0.jsonl"), "a") as f:
        f.write('{"step": 5, "loss": 5.1')
    return run_dir


# --------------------------------------------------------------------- list
def test_list_shows_every_run_oldest_first_with_status_steps_losses_and_overrides(out, capsys):
    status, text, err = _cli(capsys, "list", out)
    assert status == 0 and err == ""
    header, *lines = text.splitlines()
    assert header.split()[:4] == ["run", "status", "steps", "loss"]
    names = _dirs(out)
    assert [line.split()[0] for line in lines] == names
    with open(os.path.join(out, "index.jsonl")) as f:
        index = [json.loads(line) for line in f]
    overrides = {e["name"]: e["overrides"] for e in index}
    for name, line in zip(names, lines):
        s = _summary(os.path.join(out, name))
        assert line.split()[1:6] == ["completed", f"{s['steps']}/{s['total_steps']}", f"{s['loss']:.4f}",
                                     f"{s['eval_loss']:.4f}", str(s["world_size"])]
        assert line.endswith(" ".join(overrides[name]))


def test_list_json_gives_the_final_losses_of_the_metrics_files(out, capsys):
    status, text, _ = _cli(capsys, "list", out, "--json")
    assert status == 0
    listed = [json.loads(line) for line in text.splitlines()]
    assert [r["name"] for r in listed] == _dirs(out)
    for r in listed:
        assert r["status"] == "completed" and r["steps"] == r["total_steps"] == 4 and r["problems"] == []
        assert r["loss"] == _last(r["run_dir"], "loss")
        assert r["eval_loss"] == _last(r["run_dir"], "eval_loss")
        assert r["overrides"] and all("=" in o for o in r["overrides"])


def test_a_damaged_run_is_listed_as_unknown_with_what_is_wrong(out, tmp_path, capsys):
    run_dir = _damaged_copy(out, tmp_path)
    status, text, err = _cli(capsys, "list", str(tmp_path))
    assert status == 0
    (line,) = text.splitlines()[1:]
    # the steps and loss come from the readable metrics rows, the total from config.toml
    loss = _last(os.path.join(out, _dirs(out)[0]), "loss")
    assert line.split()[:4] == ["damaged", "unknown", "4/4", f"{loss:.4f}"]
    assert run_dir in err and "summary.json missing" in err and "torn last line" in err


def test_a_summary_that_is_not_json_is_reported_and_the_run_still_listed(out, tmp_path, capsys):
    run_dir = str(tmp_path / "garbled")
    shutil.copytree(os.path.join(out, _dirs(out)[1]), run_dir)
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        f.write('{"status": "compl')
    status, text, err = _cli(capsys, "list", run_dir)
    assert status == 0 and text.splitlines()[1].split()[:2] == ["garbled", "unknown"]
    assert "summary.json unreadable" in err


# ------------------------------------------------------------------ compare
def test_compare_has_exactly_the_differing_keys_and_the_final_metrics(out, capsys):
    status, text, _ = _cli(capsys, "compare", out, "--json")
    assert status == 0
    rows = [json.loads(line) for line in text.splitlines()]
    assert [r["run"] for r in rows] == _dirs(out)
    metrics = {"run", *R.METRICS}
    assert set(rows[0]) - metrics == DIFFERING
    for row in rows:
        run_dir = os.path.join(out, row["run"])
        s = _summary(run_dir)
        assert row["loss"] == _last(run_dir, "loss") == s["loss"]
        assert row["eval_loss"] == _last(run_dir, "eval_loss")
        assert row["eval_accuracy"] == _last(run_dir, "eval_accuracy")
        assert (row["steps"], row["status"], row["tokens_per_s"]) == (4, "completed", s["tokens_per_s"])
    assert {(r["optim.lr"], r["model.width"]) for r in rows} == {(1e-3, 64), (3e-3, 64), (1e-3, 32)}


def test_compare_table_is_aligned_with_one_header(out, capsys):
    status, text, _ = _cli(capsys, "compare", out)
    assert status == 0
    header, *lines = text.splitlines()
    assert len(lines) == 3
    assert header.split() == ["run", *[k for k in R.flatten(R.find_runs(out)[0].config) if k in DIFFERING],
                              *R.METRICS]
    # the last column (tokens_per_s, numbers) is right-aligned: every line ends in the same place
    assert len({len(line) for line in [header, *lines]}) == 1


def test_compare_of_two_runs_leaves_out_the_key_they_share(out):
    a, b = (os.path.join(out, d) for d in _dirs(out)[:2])  # same width, different lr
    assert R.config_differences([a, b]) == ["optim.lr"]
    header = R.compare_text([a, b]).splitlines()[0].split()
    assert "optim.lr" in header and "model.width" not in header


def test_where_a_run_was_written_is_no_difference(out, tmp_path):
    """A run moved to another output directory (its config.toml saying so) compares equal
    to the original; a torn last line of the index there is skipped."""
    original = os.path.join(out, _dirs(out)[0])
    moved = str(tmp_path / os.path.basename(original))
    shutil.copytree(original, moved)
    path = os.path.join(moved, "config.toml")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace(f'output_dir = "{out}"', f'output_dir = "{tmp_path}"'))
    with open(tmp_path / "index.jsonl", "w") as f:
        f.write(json.dumps({"run_dir": moved, "name": os.path.basename(moved), "overrides": ["x.y=1"]}))
        f.write('\n{"run_dir": "')
    assert R.read_run(moved).config["run"]["output_dir"] != R.read_run(original).config["run"]["output_dir"]
    assert R.config_differences([original, moved]) == []
    assert [r.overrides for r in R.find_runs(str(tmp_path))] == [["x.y=1"]]


@pytest.mark.parametrize("sort,key,descending", [(["--sort", "loss"], "loss", False),
                                                 (["--sort=-loss"], "loss", True),
                                                 (["--sort", "loss", "--desc"], "loss", True),
                                                 (["--sort", "optim.lr"], "optim.lr", False),
                                                 (["--sort=-eval_accuracy"], "eval_accuracy", True)])
def test_compare_sorts_by_any_column_either_way(out, capsys, sort, key, descending):
    status, text, _ = _cli(capsys, "compare", out, "--json", *sort)
    assert status == 0
    values = [json.loads(line)[key] for line in text.splitlines()]
    assert len(values) == 3 and values == sorted(values, reverse=descending)
    assert len(set(values)) > 1  # or the order would prove nothing


def test_sorting_puts_missing_values_last_in_both_directions(out, tmp_path):
    damaged = _damaged_copy(out, tmp_path)
    os.remove(os.path.join(damaged, "metrics.rank0.jsonl"))  # no eval loss at all
    runs = [damaged, *[os.path.join(out, d) for d in _dirs(out)]]
    for sort in ("eval_loss", "-eval_loss"):
        text = R.compare_text(runs, sort=sort)
        assert text.splitlines()[-1].split()[0] == "damaged"
        losses = [float(line.split()[-4]) for line in text.splitlines()[1:-1]]
        assert losses == sorted(losses, reverse=sort.startswith("-"))


def test_compare_csv_has_the_json_columns_and_values(out, capsys):
    _, text, _ = _cli(capsys, "compare", out, "--csv")
    _, js, _ = _cli(capsys, "compare", out, "--json")
    table = list(csv.DictReader(io.StringIO(text)))
    rows = [json.loads(line) for line in js.splitlines()]
    assert list(table[0]) == list(rows[0])
    assert [float(r["loss"]) for r in table] == [r["loss"] for r in rows]


# ---------------------------------------------------------------- bad input
def test_a_directory_without_runs_is_refused_by_name(tmp_path, capsys):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    for command in (["list"], ["compare"], ["plot", "-o", str(tmp_path / "x.png")]):
        status, text, err = _cli(capsys, *command, str(empty))
        assert status == 2 and text == ""
        assert str(empty) in err and "not a run directory" in err and "config.toml" in err
    status, _, err = _cli(capsys, "compare", str(tmp_path / "missing"))
    assert status == 2 and "missing: no such directory" in err


def test_plotting_against_an_unknown_axis_is_refused_by_name(out, tmp_path):
    with pytest.raises(R.RunsError, match="'epoch'.*step, tokens, time or all"):
        R.plot_runs(out, str(tmp_path / "x.png"), x="epoch")


def test_an_unknown_sort_column_is_refused_with_the_columns_there_are(out, capsys):
    status, text, err = _cli(capsys, "compare", out, "--sort", "optim.lrr")
    assert status == 2 and text == ""
    assert "'optim.lrr'" in err and "optim.lr" in err.split("columns are")[1]


# --------------------------------------------------------------------- plot
def test_plot_draws_loss_and_eval_loss_of_each_run_at_the_size_asked(out, tmp_path):
    image = pytest.importorskip("matplotlib.image")
    a, b = (os.path.join(out, d) for d in _dirs(out)[:2])
    png = str(tmp_path / "curves.png")
    drawn = R.plot_runs([a, b], png, width=640, height=480)
    assert drawn["curves"] == 4 and drawn["panels"] == ["step"]
    assert image.imread(png).shape[:2] == (480, 640)
    lrs = [R.format_value(R.read_run(d).config["optim"]["lr"]) for d in (a, b)]
    assert drawn["labels"] == [f"optim.lr={lr}: {m}" for lr in lrs for m in ("loss", "eval_loss")]


def test_plot_command_against_every_x_writes_three_panels(out, tmp_path, capsys):
    image = pytest.importorskip("matplotlib.image")
    png = str(tmp_path / "all.png")
    status, text, _ = _cli(capsys, "plot", out, "-o", png, "--x", "all", "--metric", "loss",
                           "--width", "1200", "--height", "400")
    assert status == 0 and "9 curves" in text
    assert image.imread(png).shape[:2] == (400, 1200)
    drawn = R.plot_runs(out, png, x="all", metrics=("loss",))
    assert drawn["panels"] == ["step", "tokens", "time"] and drawn["curves"] == 9
    # three runs differing in two keys: every label names both
    assert all("optim.lr=" in lab and "model.width=" in lab for lab in drawn["labels"])


def test_a_single_run_is_labelled_by_its_name(out, tmp_path):
    pytest.importorskip("matplotlib")
    run_dir = os.path.join(out, _dirs(out)[0])
    drawn = R.plot_runs(run_dir, str(tmp_path / "one.png"), metrics=("grad_norm",))
    assert drawn["labels"] == [os.path.basename(run_dir)] and drawn["curves"] == 1


def test_plot_without_matplotlib_exits_2_with_the_install_hint(out, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    png = tmp_path / "curves.png"
    status, text, err = _cli(capsys, "plot", out, "-o", str(png))
    assert status == 2 and text == "" and not png.exists()
    assert 'pip install "distgrad[plot]"' in err


# ------------------------------------------------------------------ entry
def test_the_module_runs_as_a_command(out):
    proc = subprocess.run([sys.executable, "-m", "launch.runs_cli", "list", out, "--json"], cwd=REPO, check=False,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["name"] for line in proc.stdout.splitlines()] == _dirs(out)

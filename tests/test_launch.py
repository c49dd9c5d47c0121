"""``distgrad-launch``: command lines for MPICH (Hydra), Open MPI and srun, single and
multi-node; hostfiles; flavor detection; the exit status for a bad config.

The command lines are checked as text, through ``launch.mpi.build_command`` and
through ``distgrad-launch ... --dry-run`` with ``--mpiexec`` pointing at a fake
launcher that only answers ``--version`` (so nothing is started)."""
import os
import shlex
import stat
import subprocess
import sys

import pytest

from launch import mpi
from launch.cli import main as cli_main
from launch.hostfile import HostError, check_capacity, parse_hostfile, parse_hosts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(REPO, "configs", "quickstart.toml")
TIMEOUT = 60
PROGRAM = ["/venv/bin/python", "-m", "distgrad.train", "runs/x"]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

VERSIONS = {
    "mpich": "HYDRA build details:\n    Version:                                 4.2.0\n",
    "openmpi": "mpirun (Open MPI) 5.0.3\n\nReport bugs to https://www.open-mpi.org/community/help/\n",
    "unknown": "some other launcher 1.0\n",
}


def fake_mpiexec(tmp_path, flavor):
    """A launcher that prints ``flavor``'s version text for --version and fails otherwise
    (a dry run must never start it for real)."""
    path = tmp_path / f"fake-mpiexec-{flavor}"
    path.write_text("#!/bin/sh\n"
                    'if [ "$1" = "--version" ]; then\n'
                    f"cat <<'EOF'\n{VERSIONS[flavor]}EOF\n"
                    "exit 0\nfi\n"
                    "echo 'fake mpiexec must not run a job' >&2\nexit 99\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def launch(tmp_path, *args, env=None):
    """``python -m launch.cli ARGS`` in tmp_path, with run.output_dir in tmp_path."""
    cmd = [sys.executable, "-m", "launch.cli", *args, f'run.output_dir="{tmp_path / "runs"}"']
    e = dict(os.environ if env is None else env)
    e["PYTHONPATH"] = REPO + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    proc = subprocess.run(cmd, cwd=tmp_path, env=e, capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL)
    return proc


def dry_run(tmp_path, flavor, *args):
    """The command ``distgrad-launch quickstart.toml --dry-run ARGS`` prints, as a list
    (a global batch of 48 in microbatches of 1 fits 2, 4, 6 and 8 ranks)."""
    proc = launch(tmp_path, QUICKSTART, "--dry-run", "--mpiexec", fake_mpiexec(tmp_path, flavor),
                  "train.global_batch=48", "train.micro_batch=1", *args)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stdout
    return shlex.split(lines[0])


def flag_value(cmd, flag):
    assert flag in cmd, cmd
    return cmd[cmd.index(flag) + 1]


def program_part(cmd):
    """The trainer's part of a launch command: from the Python on."""
    i = cmd.index("-m")
    assert cmd[i + 1] == "distgrad.train"
    return cmd[i - 1:]


def run_dir_of(cmd):
    return program_part(cmd)[3]


# ------------------------------------------------- build_command directly
def test_hydra_single_node():
    cmd = mpi.build_command("mpich", "/x/mpiexec", 4, PROGRAM)
    assert cmd[:3] == ["/x/mpiexec", "-n", "4"]
    assert cmd[-len(PROGRAM):] == PROGRAM
    # Hydra forwards the whole environment by default: nothing may replace that.
    for flag in ("-genvlist", "-genvnone", "-f", "-hosts", "--hostfile", "--host", "-x", "--allow-run-as-root"):
        assert flag not in cmd


def test_hydra_hosts_are_inline():
    cmd = mpi.build_command("mpich", "mpiexec", 8, PROGRAM, hosts=[("h1", 4), ("h2", 4)])
    assert flag_value(cmd, "-n") == "8"
    assert flag_value(cmd, "-hosts") == "h1:4,h2:4"
    assert "-f" not in cmd
    assert cmd[-len(PROGRAM):] == PROGRAM


def test_hydra_env_and_extra_args():
    cmd = mpi.build_command("mpich", "mpiexec", 2, PROGRAM, env={"MY_SETTING": "42", "B": "x y"},
                            extra_args=["-iface", "eth0"])
    i = cmd.index("-genv")
    assert cmd[i:i + 6] == ["-genv", "MY_SETTING", "42", "-genv", "B", "x y"]
    j = cmd.index("-iface")
    assert cmd[j + 1] == "eth0" and i < j < cmd.index(PROGRAM[0])
    assert "-genvlist" not in cmd


def test_openmpi_single_node():
    cmd = mpi.build_command("openmpi", "mpirun", 2, PROGRAM, forward=["PATH", "PYTHONPATH"])
    assert cmd[:3] == ["mpirun", "-n", "2"]
    xs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-x"]
    assert xs == ["PATH", "PYTHONPATH"]
    assert "--allow-run-as-root" not in cmd
    assert "-genvlist" not in cmd and "-genv" not in cmd
    assert cmd[-len(PROGRAM):] == PROGRAM


def test_openmpi_env_values_and_extra_args():
    cmd = mpi.build_command("openmpi", "mpirun", 2, PROGRAM, env={"A": "1"}, forward=["PATH", "A"],
                            extra_args=["--mca", "btl", "tcp,self"])
    xs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-x"]
    assert xs == ["PATH", "A=1"]  # a variable with a value is passed once, with it
    assert cmd[cmd.index("--mca"):cmd.index("--mca") + 3] == ["--mca", "btl", "tcp,self"]
    assert cmd[-len(PROGRAM):] == PROGRAM


def test_openmpi_as_root():
    cmd = mpi.build_command("openmpi", "mpirun", 2, PROGRAM, is_root=True)
    assert "--allow-run-as-root" in cmd
    assert cmd.index("--allow-run-as-root") < cmd.index(PROGRAM[0])


def test_hydra_never_gets_allow_run_as_root():
    cmd = mpi.build_command("mpich", "mpiexec", 2, PROGRAM, is_root=True)
    assert "--allow-run-as-root" not in cmd


def test_openmpi_hosts_are_inline():
    cmd = mpi.build_command("openmpi", "mpirun", 8, PROGRAM, hosts=[("h1", 4), ("h2", 4)])
    assert flag_value(cmd, "--host") == "h1:4,h2:4"
    assert "--hostfile" not in cmd


def test_srun():
    cmd = mpi.build_command("srun", "ignored", 4, PROGRAM)
    assert cmd[0] == "srun"
    assert flag_value(cmd, "--ntasks") == "4"
    assert "--export=ALL" in cmd
    assert "ignored" not in cmd and "-n" not in cmd
    assert cmd[-len(PROGRAM):] == PROGRAM
    cmd = mpi.build_command("srun", "ignored", 8, PROGRAM, hosts=[("h1", 4), ("h2", 4)], env={"A": "1"},
                            extra_args=["--mpi=pmi2"])
    assert flag_value(cmd, "--ntasks") == "8"
    assert flag_value(cmd, "--nodes") == "2"
    assert flag_value(cmd, "--nodelist") == "h1,h2"
    assert "--export=ALL,A=1" in cmd and "--mpi=pmi2" in cmd


def test_forwarded_names_for_open_mpi():
    env = {"PATH": "/bin", "PYTHONPATH": "x", "HOME": "/root", "DISTGRAD_B": "1", "DISTGRAD_A": "2",
           "OMP_NUM_THREADS": "1", "SECRET_TOKEN": "no", "UCX_TLS": "tcp", "NCCL_DEBUG": "INFO"}
    names = mpi.forwarded_names(env)
    assert names == sorted(names)
    for name in ("PATH", "PYTHONPATH", "HOME", "DISTGRAD_A", "DISTGRAD_B", "OMP_NUM_THREADS", "UCX_TLS",
                 "NCCL_DEBUG"):
        assert name in names
    assert "SECRET_TOKEN" not in names


@pytest.mark.parametrize("hosts, n, expected", [
    ([("a", 2), ("b", 2)], 4, [("a", [0, 1]), ("b", [2, 3])]),
    ([("a", 2), ("b", 2)], 3, [("a", [0, 1]), ("b", [2])]),
    ([("a", 4), ("b", 4)], 2, [("a", [0, 1]), ("b", [])]),
    ([("a", 1), ("b", 1), ("c", 1)], 3, [("a", [0]), ("b", [1]), ("c", [2])]),
])
def test_placement_fills_hosts_in_order(hosts, n, expected):
    assert mpi.placement(hosts, n) == expected


# ------------------------------------------------------- flavor detection
@pytest.mark.parametrize("flavor", ["mpich", "openmpi", "unknown"])
def test_detect_flavor_of_fake_launchers(tmp_path, flavor):
    assert mpi.detect_flavor(fake_mpiexec(tmp_path, flavor)) == flavor


def test_detect_flavor_of_a_missing_launcher(tmp_path):
    assert mpi.detect_flavor(str(tmp_path / "does-not-exist")) == "unknown"


def _mpich_wheel_mpiexec():
    """The mpiexec the ``mpich`` wheel installs next to this Python, if it is installed."""
    from importlib import metadata

    try:
        metadata.distribution("mpich")
    except metadata.PackageNotFoundError:
        return None
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.isfile(here) and os.access(here, os.X_OK) else None


@pytest.mark.skipif(_mpich_wheel_mpiexec() is None,
                    reason="needs the mpich wheel's mpiexec next to this Python (pip install -e '.[dev]')")
def test_the_real_mpich_mpiexec_is_detected_as_mpich():
    exe = mpi.find_mpiexec()
    assert exe == _mpich_wheel_mpiexec()
    assert mpi.detect_flavor(exe) == "mpich"


def test_find_mpiexec_prefers_the_explicit_one(tmp_path):
    fake = fake_mpiexec(tmp_path, "openmpi")
    assert mpi.find_mpiexec(fake) == fake


def test_find_mpiexec_refuses_a_missing_or_unusable_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such program"):
        mpi.find_mpiexec(str(tmp_path / "mpirun"))
    with pytest.raises(FileNotFoundError, match="on PATH"):
        mpi.find_mpiexec("no-such-mpirun-anywhere")
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(FileNotFoundError, match="not executable"):
        mpi.find_mpiexec(str(plain))


# -------------------------------------------------------------- hostfiles
def test_parse_hostfile_forms(tmp_path):
    path = tmp_path / "hosts.txt"
    path.write_text("# cluster\n"
                    "node1 slots=4\n"
                    "\n"
                    "node2:2   # two GPUs\n"
                    "node3\n"
                    "   node4 slots=8 max_slots=16\n")
    assert parse_hostfile(str(path)) == [("node1", 4), ("node2", 2), ("node3", 1), ("node4", 8)]


@pytest.mark.parametrize("line, what", [
    ("node1 slots=four", "four"),
    ("node1 slots=0", "at least 1"),
    ("node1:x", "'x'"),
    ("node1 slots=-2", "at least 1"),
    ("node1 cores=4", "cores=4"),
])
def test_bad_hostfile_lines_are_clear_errors(tmp_path, line, what):
    path = tmp_path / "hosts.txt"
    path.write_text(f"node0 slots=2\n{line}\n")
    with pytest.raises(HostError) as info:
        parse_hostfile(str(path))
    msg = str(info.value)
    assert f"{path}:2" in msg  # the file and the line
    assert what in msg


def test_empty_or_missing_hostfile(tmp_path):
    path = tmp_path / "hosts.txt"
    path.write_text("# nothing here\n\n")
    with pytest.raises(HostError, match="no hosts"):
        parse_hostfile(str(path))
    with pytest.raises(HostError, match="missing.txt"):
        parse_hostfile(str(tmp_path / "missing.txt"))


def test_parse_hosts():
    assert parse_hosts("h1:4,h2:4") == [("h1", 4), ("h2", 4)]
    assert parse_hosts("h1, h2:3") == [("h1", 1), ("h2", 3)]
    with pytest.raises(HostError, match="whole number"):
        parse_hosts("h1:four")
    with pytest.raises(HostError):
        parse_hosts(",")


def test_check_capacity():
    check_capacity([("a", 2), ("b", 2)], 4)
    with pytest.raises(HostError) as info:
        check_capacity([("a", 2), ("b", 2)], 5)
    msg = str(info.value)
    assert "5" in msg and "4 slots" in msg and "a:2" in msg and "b:2" in msg


# ------------------------------------------------ through distgrad-launch
def test_dry_run_mpich_single_node(tmp_path):
    cmd = dry_run(tmp_path, "mpich", "--np", "4")
    assert cmd[0].endswith("fake-mpiexec-mpich")
    assert flag_value(cmd, "-n") == "4"
    assert "-genvlist" not in cmd  # Hydra's default, forwarding everything, stays
    i = cmd.index("-genv")
    assert cmd[i:i + 3] == ["-genv", "DISTGRAD_THREADS", "auto"]  # sized on each host
    assert "-f" not in cmd and "-hosts" not in cmd and "-x" not in cmd
    prog = program_part(cmd)
    assert prog[0] == sys.executable
    run_dir = run_dir_of(cmd)
    assert run_dir.startswith(str(tmp_path / "runs" / "quickstart-"))
    assert "--resume" not in prog
    # The run directory is prepared, so that the command runs as printed; its digest is on it.
    from distgrad.train import startup

    assert flag_value(prog, "--config-digest") == startup.digest(os.path.join(run_dir, "config.toml"))
    assert flag_value(prog, "--startup-timeout") == "600"


def test_dry_run_uses_dist_np_of_the_config(tmp_path):
    cmd = dry_run(tmp_path, "mpich")
    assert flag_value(cmd, "-n") == "2"  # quickstart.toml: dist.np = 2
    cmd = dry_run(tmp_path, "mpich", "dist.np=4")
    assert flag_value(cmd, "-n") == "4"


def test_dry_run_open_mpi_is_told_to_forward_distgrad_variables(tmp_path):
    env = dict(os.environ, DISTGRAD_SOMETHING="1", UNRELATED_SECRET="x")
    fake = fake_mpiexec(tmp_path, "openmpi")
    proc = launch(tmp_path, QUICKSTART, "--dry-run", "--mpiexec", fake, env=env)
    assert proc.returncode == 0, proc.stderr
    cmd = shlex.split(proc.stdout.strip())
    xs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-x"]
    assert "DISTGRAD_SOMETHING" in xs and "PYTHONPATH" in xs and "PATH" in xs
    assert "UNRELATED_SECRET" not in xs


def test_dry_run_env_and_mpiexec_args(tmp_path, monkeypatch):
    env = dict(os.environ, FROM_HERE="here value")
    fake = fake_mpiexec(tmp_path, "mpich")
    proc = launch(tmp_path, QUICKSTART, "--dry-run", "--mpiexec", fake, "--env", "MY_SETTING=42",
                  "--env", "FROM_HERE", 'dist.env.THIRD="x"', "--mpiexec-args", "-iface eth0 -bind-to core",
                  env=env)
    assert proc.returncode == 0, proc.stderr
    cmd = shlex.split(proc.stdout.strip())
    genv = {cmd[i + 1]: cmd[i + 2] for i, a in enumerate(cmd) if a == "-genv"}
    assert genv["MY_SETTING"] == "42" and genv["FROM_HERE"] == "here value" and genv["THIRD"] == "x"
    tail = cmd[cmd.index("-iface"):cmd.index(sys.executable)]
    assert tail == ["-iface", "eth0", "-bind-to", "core"]
    # the run's config records them
    from distgrad.train.config import load

    cfg = load(os.path.join(run_dir_of(cmd), "config.toml"))
    assert cfg["dist"]["env"]["MY_SETTING"] == "42"
    assert cfg["dist"]["mpiexec_args"] == ["-iface", "eth0", "-bind-to", "core"]


def test_env_without_a_value_that_is_not_set_is_refused(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NOT_SET_ANYWHERE"}
    proc = launch(tmp_path, QUICKSTART, "--dry-run", "--mpiexec", fake_mpiexec(tmp_path, "mpich"),
                  "--env", "NOT_SET_ANYWHERE", env=env)
    assert proc.returncode == 2
    assert "--env NOT_SET_ANYWHERE" in proc.stderr and "not set" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_dry_run_mpich_hosts(tmp_path):
    cmd = dry_run(tmp_path, "mpich", "--hosts", "h1:4,h2:4", "--np", "8")
    assert flag_value(cmd, "-n") == "8"
    assert flag_value(cmd, "-hosts") == "h1:4,h2:4"
    assert "-f" not in cmd


def test_dry_run_mpich_hostfile(tmp_path):
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("node1 slots=4\nnode2 slots=4\n")
    cmd = dry_run(tmp_path, "mpich", "--hostfile", str(hostfile), "--np", "8")
    assert flag_value(cmd, "-n") == "8"
    # the hosts go on the command line, so the command needs no file but the run's own
    assert flag_value(cmd, "-hosts") == "node1:4,node2:4"
    assert "-f" not in cmd


def test_dry_run_openmpi_single_node(tmp_path):
    cmd = dry_run(tmp_path, "openmpi", "--np", "2")
    assert cmd[0].endswith("fake-mpiexec-openmpi")
    assert flag_value(cmd, "-n") == "2"
    xs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-x"]
    assert "PATH" in xs and "DISTGRAD_THREADS=auto" in xs
    assert ("--allow-run-as-root" in cmd) == IS_ROOT
    assert "-genvlist" not in cmd and "--hostfile" not in cmd and "--host" not in cmd


def test_dry_run_openmpi_hosts_and_hostfile(tmp_path):
    cmd = dry_run(tmp_path, "openmpi", "--hosts", "h1:4,h2:4", "--np", "8")
    assert flag_value(cmd, "--host") == "h1:4,h2:4"
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("node1 slots=4\nnode2 slots=4\n")
    cmd = dry_run(tmp_path, "openmpi", "--hostfile", str(hostfile), "--np", "6")
    assert flag_value(cmd, "-n") == "6"
    assert flag_value(cmd, "--host") == "node1:4,node2:4"
    assert "--hostfile" not in cmd
    assert ("--allow-run-as-root" in cmd) == IS_ROOT


def test_dry_run_hosts_from_the_config(tmp_path):
    cmd = dry_run(tmp_path, "mpich", 'dist.hosts="a:2,b:2"', "dist.np=4")
    assert flag_value(cmd, "-hosts") == "a:2,b:2"


def test_dry_run_srun(tmp_path):
    cmd = dry_run(tmp_path, "mpich", "--launcher", "srun", "--np", "4")
    assert cmd[0] == "srun"
    assert flag_value(cmd, "--ntasks") == "4"
    assert program_part(cmd)[0] == sys.executable
    cmd = dry_run(tmp_path, "mpich", "dist.launcher=srun", "--hosts", "n1:2,n2:2", "--np", "4")
    assert cmd[0] == "srun"
    assert flag_value(cmd, "--nodelist") == "n1,n2"


def test_dry_run_debug(tmp_path):
    proc = launch(tmp_path, QUICKSTART, "--debug", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "in this process" in proc.stdout and "distgrad.train" in proc.stdout
    assert not (tmp_path / "runs").exists()


def test_dry_run_resume(tmp_path):
    import distgrad as dg
    from distgrad.train import checkpoint
    from distgrad.train.config import config_hash, load

    run_dir = tmp_path / "runs" / "old"
    run_dir.mkdir(parents=True)
    # Without a usable checkpoint there is nothing to resume: refused, nothing written.
    proc = launch(tmp_path, QUICKSTART, "--dry-run", "--mpiexec", fake_mpiexec(tmp_path, "mpich"),
                  "--resume", str(run_dir))
    assert proc.returncode == 2 and "no usable checkpoint" in proc.stderr, proc.stderr
    assert os.listdir(run_dir) == []
    # A checkpoint made with this config can be resumed.
    cfg = load(QUICKSTART, ["train.global_batch=48", "train.micro_batch=1"])
    model = dg.nn.Linear(2, 2)
    opt = dg.optim.SGD(model.parameters(), lr=0.1)
    checkpoint.save(str(run_dir), 3, model, opt, None,
                    {"config": cfg, "config_hash": config_hash(cfg), "steps_per_epoch": 100}, keep=2)
    cmd = dry_run(tmp_path, "mpich", "--resume", str(run_dir))
    assert run_dir_of(cmd) == str(run_dir) and program_part(cmd)[4] == "--resume"
    assert sorted(os.listdir(run_dir)) == ["ckpt-00000003.json", "ckpt-00000003.safetensors"]


def test_resume_of_a_missing_run_dir(tmp_path):
    proc = launch(tmp_path, QUICKSTART, "--dry-run", "--mpiexec", fake_mpiexec(tmp_path, "mpich"),
                  "--resume", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert "nope" in proc.stderr and "no such run directory" in proc.stderr


# ------------------------------------------------------------- errors
def test_bad_config_exits_2_with_the_message_on_stderr(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(open(QUICKSTART).read().replace("steps = 200", "stesp = 200"))
    proc = launch(tmp_path, str(bad), "--dry-run", "--mpiexec", fake_mpiexec(tmp_path, "mpich"))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "distgrad-launch: error:" in proc.stderr
    assert str(bad) in proc.stderr and "train.stesp" in proc.stderr and "did you mean 'steps'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_override_exits_2(tmp_path):
    proc = launch(tmp_path, QUICKSTART, "train.steps=many", "--dry-run",
                  "--mpiexec", fake_mpiexec(tmp_path, "mpich"))
    assert proc.returncode == 2
    assert "train.steps" in proc.stderr and "integer" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_batch_arithmetic_error_for_np(tmp_path):
    # quickstart: global 32, micro 8; 3 ranks -> 8 x 3 = 24 does not divide 32
    proc = launch(tmp_path, QUICKSTART, "--np", "3", "--dry-run",
                  "--mpiexec", fake_mpiexec(tmp_path, "mpich"))
    assert proc.returncode == 2
    assert "8 x 3 = 24" in proc.stderr


def test_too_many_ranks_for_the_slots(tmp_path):
    proc = launch(tmp_path, QUICKSTART, "--hosts", "h1:1,h2:1", "--np", "4", "--dry-run",
                  "--mpiexec", fake_mpiexec(tmp_path, "mpich"))
    assert proc.returncode == 2
    assert "4 ranks" in proc.stderr and "2 slots" in proc.stderr


def test_bad_hostfile_exits_2(tmp_path):
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("node1 slots=lots\n")
    proc = launch(tmp_path, QUICKSTART, "--hostfile", str(hostfile), "--dry-run",
                  "--mpiexec", fake_mpiexec(tmp_path, "mpich"))
    assert proc.returncode == 2
    assert f"{hostfile}:1" in proc.stderr and "lots" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_hostfile_and_hosts_together_are_refused_on_the_command_line(tmp_path):
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("node1 slots=4\n")
    proc = launch(tmp_path, QUICKSTART, "--hostfile", str(hostfile), "--hosts", "a:2", "--dry-run")
    assert proc.returncode == 2 and "--hosts" in proc.stderr


def test_command_line_hosts_replace_the_configs(tmp_path):
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("node1 slots=4\n")
    cfg = tmp_path / "multi.toml"
    # a hostfile beside the config, named relative to it
    cfg.write_text(open(QUICKSTART).read().replace("[dist]", f'[dist]\nhostfile = "{hostfile.name}"'))
    fake = fake_mpiexec(tmp_path, "mpich")
    proc = launch(tmp_path, str(cfg), "--dry-run", "--mpiexec", fake, "--hosts", "a:1,b:1")
    assert proc.returncode == 0, proc.stderr
    assert flag_value(shlex.split(proc.stdout), "-hosts") == "a:1,b:1"
    other = tmp_path / "other.txt"
    other.write_text("c slots=2\n")
    proc = launch(tmp_path, str(cfg), "--dry-run", "--mpiexec", fake, "--hostfile", str(other))
    assert proc.returncode == 0, proc.stderr
    assert flag_value(shlex.split(proc.stdout), "-hosts") == "c:2"


def test_missing_config_file(tmp_path):
    proc = launch(tmp_path, str(tmp_path / "none.toml"), "--dry-run")
    assert proc.returncode == 2
    assert "none.toml" in proc.stderr and "does not exist" in proc.stderr


def test_main_returns_2_in_process(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim]\nlr = -1\n[train]\nsteps = 1\n")
    assert cli_main([str(bad), "--dry-run", f'run.output_dir="{tmp_path}"']) == 2
    err = capsys.readouterr().err
    assert "optim.lr" in err and str(bad) in err


def test_console_script_is_installed():
    script = os.path.join(os.path.dirname(sys.executable), "distgrad-launch")
    if not os.path.exists(script):
        pytest.skip("distgrad-launch is not installed next to this Python (pip install -e .)")
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0
    assert "--dry-run" in proc.stdout and "--resume" in proc.stdout and "--hostfile" in proc.stdout

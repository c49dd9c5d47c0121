"""A tiny ssh for the network-namespace cluster of ``tests/netns.py``: a client that
MPICH's Hydra runs as its ssh (``HYDRA_LAUNCHER=ssh``, ``HYDRA_LAUNCHER_EXEC``), and
the daemon each node runs in its own namespaces as that node's sshd and init.

It behaves as ssh does where a launcher can tell:

* the client takes ssh's options (Hydra passes ``-x``), then the host, then the
  command's words, which are joined with spaces and run by the remote shell
  (``sh -c``), so the quotes Hydra puts around the proxy's path are a shell's to
  remove;
* the host is resolved by the client (``/etc/hosts`` of the node it runs on) and
  reached over TCP port 22 on the test network; an unknown host or a node that does
  not answer fails with ssh's messages and exit status 255;
* the remote command runs on the node (its network, hostname and mounts) as a child
  of that node's daemon, in a session of its own: not in the process tree of the
  client or of anything on the launching node; it starts in the home directory with a
  login environment (``HOME``, ``USER``, ``LOGNAME``, ``SHELL``, a system ``PATH``,
  ``SSH_CONNECTION``, ``SSH_CLIENT``) plus the node's site variables (what a node's
  ``/etc/environment`` would hold): nothing of the client's environment;
* stdin, stdout and stderr are relayed over the connection; the client exits with
  the command's status (255 when it was killed by a signal or the connection was
  lost);
* when the client dies, the connection closes: the command's stdin reaches EOF and
  its writes to stdout/stderr fail (EPIPE, SIGPIPE), and it is not killed (as sshd
  does for a command without a terminal).

The daemon is the node's subreaper, so processes orphaned on a node are reaped there.
It exits when its stdin closes (the test process that started it is gone) or on
SIGTERM. Per-session hidden directories (``STATE/hide/HOSTNAME.json``, a list of
paths) get an empty read-only tmpfs mounted over them in the session's own mount
namespace: the node does not see what the others see there (no shared filesystem).

    ssh.py [--log FILE] [ssh options] HOST COMMAND...   the client (FILE: a JSON line
                                                        per call: host, command, arguments)
    ssh.py --serve STATE_DIR HOSTNAME                   the node daemon (started by the harness)
"""
import contextlib
import ctypes
import json
import os
import pwd
import select
import signal
import socket
import struct
import subprocess
import sys

PORT = 22
STDIN, STDOUT, STDERR, EXIT = 0, 1, 2, 3
HEADER = struct.Struct(">BI")
# ssh's options that take an argument (the others are flags)
WITH_ARG = set("BbcDEeFIiJLlmOoPpQRSWw")
FLAGS = set("46AaCfGgKkMNnqsTtVvXxYy")


# ------------------------------------------------------------------ frames
def send_frame(sock, channel, data=b""):
    sock.sendall(HEADER.pack(channel, len(data)) + data)


class Frames:
    """Reads frames off a stream socket as they arrive."""

    def __init__(self, sock, buf=b""):
        self.sock, self.buf, self.closed = sock, buf, False

    def read(self):
        """The complete frames now available; sets ``closed`` at EOF (or a reset)."""
        try:
            chunk = self.sock.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            self.closed = True
        self.buf += chunk
        return self.parse()

    def parse(self):
        frames = []
        while len(self.buf) >= HEADER.size:
            channel, n = HEADER.unpack_from(self.buf)
            if len(self.buf) < HEADER.size + n:
                break
            frames.append((channel, self.buf[HEADER.size:HEADER.size + n]))
            self.buf = self.buf[HEADER.size + n:]
        return frames


def write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


# ------------------------------------------------------------------ client
def parse_client_args(argv):
    """(host, command line) from ssh's argument list."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        j = 1
        while j < len(arg):
            if arg[j] in WITH_ARG:
                if j + 1 == len(arg):
                    i += 1  # the argument is the next word
                break
            if arg[j] not in FLAGS:
                raise SystemExit(f"ssh: unknown option -- {arg[j]}")
            j += 1
        i += 1
    if i >= len(argv):
        raise SystemExit("usage: ssh [options] destination command")
    host = argv[i].rpartition("@")[2]
    command = " ".join(argv[i + 1:])
    if not command:
        raise SystemExit("ssh: this ssh runs commands only (no interactive login)")
    return host, command


def client(argv):
    log = None
    if argv[:1] == ["--log"]:
        log, argv = argv[1], argv[2:]
    try:
        host, command = parse_client_args(argv)
    except SystemExit as e:
        host, command = None, None
        sys.stderr.write(f"{e}\n")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"host": host, "command": command, "argv": argv}) + "\n")
    if host is None:
        return 255
    try:
        addr = socket.getaddrinfo(host, PORT, socket.AF_INET, socket.SOCK_STREAM)[0][4]
    except socket.gaierror as e:
        sys.stderr.write(f"ssh: Could not resolve hostname {host}: {e.strerror}\r\n")
        return 255
    try:
        sock = socket.create_connection(addr, timeout=10)
    except OSError as e:
        sys.stderr.write(f"ssh: connect to host {host} port {PORT}: {e.strerror or e}\r\n")
        return 255
    sock.settimeout(None)
    request = json.dumps({"command": command, "user": pwd.getpwuid(os.getuid()).pw_name}) + "\n"
    sock.sendall(request.encode())
    frames = Frames(sock)
    stdin_open = True
    try:
        os.fstat(0)
    except OSError:
        stdin_open = False
    if not stdin_open:
        send_frame(sock, STDIN)
    while True:
        watch = [sock] + ([0] if stdin_open else [])
        try:
            ready, _, _ = select.select(watch, [], [])
        except InterruptedError:
            continue
        if 0 in ready:
            try:
                data = os.read(0, 65536)
            except OSError:
                data = b""
            with contextlib.suppress(OSError):   # the other end is gone: its exit is read below
                send_frame(sock, STDIN, data)
            if not data:
                stdin_open = False
        if sock in ready:
            for channel, data in frames.read():
                if channel in (STDOUT, STDERR):
                    try:
                        write_all(channel, data)
                    except OSError:  # whoever reads our output is gone
                        return 255
                elif channel == EXIT:
                    return json.loads(data).get("status", 255)
            if frames.closed:
                sys.stderr.write(f"Connection to {host} closed by remote host.\r\n")
                return 255


# ------------------------------------------------------------------ daemon
_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_CHILD_SUBREAPER = 36
CLONE_NEWNS = 0x00020000


def _check(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def login_env(state, peer, me):
    user = pwd.getpwuid(os.getuid())
    env = {"HOME": user.pw_dir, "USER": user.pw_name, "LOGNAME": user.pw_name, "SHELL": "/bin/sh",
           "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "SSH_CLIENT": f"{peer[0]} {peer[1]} {me[1]}",
           "SSH_CONNECTION": f"{peer[0]} {peer[1]} {me[0]} {me[1]}"}
    env.update(state.get("site_env", {}))
    return env


def hide(paths):
    """An empty read-only tmpfs over each existing path, in a mount namespace of this
    session's own."""
    paths = [p for p in paths if os.path.isdir(p)]
    if not paths:
        return
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    for p in paths:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0555,ro", "tmpfs", p], check=True)


def session(conn, state_dir, hostname):
    """One connection: run its command and relay its input and output."""
    conn.settimeout(None)
    buf = b""
    while b"\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            os._exit(0)
        buf += chunk
    line, _, rest = buf.partition(b"\n")
    request = json.loads(line)
    with open(os.path.join(state_dir, "cluster.json")) as f:
        state = json.load(f)
    hide_file = os.path.join(state_dir, "hide", f"{hostname}.json")
    try:
        if os.path.exists(hide_file):
            with open(hide_file) as f:
                hide(json.load(f))
    except (OSError, subprocess.CalledProcessError, ValueError) as e:
        send_frame(conn, STDERR, f"sshd on {hostname}: cannot hide directories: {e}\n".encode())
        send_frame(conn, EXIT, json.dumps({"status": 255}).encode())
        os._exit(0)
    env = login_env(state, conn.getpeername(), conn.getsockname())
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            for sig in (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            os.dup2(in_r, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.closerange(3, 65536)
            os.chdir(env["HOME"])
            os.execve("/bin/sh", ["sh", "-c", request["command"]], env)
        except BaseException as e:  # noqa: BLE001 (report anything, then leave)
            os.write(2, f"sshd: cannot run the command: {e}\n".encode())
        os._exit(127)
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    frames = Frames(conn, rest)
    outputs = {out_r: STDOUT, err_r: STDERR}
    stdin_w = in_w

    def take(frames_now):
        nonlocal stdin_w
        for channel, data in frames_now:
            if channel == STDIN and stdin_w is not None:
                if data:
                    with contextlib.suppress(OSError):   # the command closed its stdin
                        write_all(stdin_w, data)
                else:
                    os.close(stdin_w)
                    stdin_w = None

    def gone():
        """The client went away: close our ends of the command's pipes (its stdin sees
        EOF, its writes fail) and leave; the command is not killed."""
        os._exit(0)

    take(frames.parse())  # what came with the request
    while outputs:
        try:
            ready, _, _ = select.select([conn, *outputs], [], [])
        except InterruptedError:
            continue
        if conn in ready:
            take(frames.read())
            if frames.closed:
                gone()
        for fd in [fd for fd in ready if fd in outputs]:
            data = os.read(fd, 65536)
            if not data:
                os.close(fd)
                del outputs[fd]
                continue
            try:
                send_frame(conn, outputs[fd], data)
            except OSError:
                gone()
    _, status = os.waitpid(pid, 0)
    code = {"status": os.WEXITSTATUS(status)} if os.WIFEXITED(status) else {"signal": os.WTERMSIG(status)}
    with contextlib.suppress(OSError):   # a client that is gone has nothing left to hear
        send_frame(conn, EXIT, json.dumps(code).encode())
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)  # until the client closes
    os._exit(0)


def serve(state_dir, hostname):
    """The node's daemon: its hostname, its init (subreaper) and its sshd on port 22."""
    socket.sethostname(hostname)
    _check(_libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", PORT))
    listener.listen(64)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    sys.stdout.write(f"ready {os.getpid()}\n")
    sys.stdout.flush()
    while not stop:
        try:
            ready, _, _ = select.select([listener, sys.stdin], [], [], 0.2)
        except InterruptedError:
            ready = []
        while True:  # reap sessions and whatever was orphaned on this node
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        if sys.stdin in ready and not os.read(sys.stdin.fileno(), 4096):
            break  # whoever started the node is gone
        if listener in ready:
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            if os.fork() == 0:
                listener.close()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                try:
                    session(conn, state_dir, hostname)
                finally:
                    os._exit(0)
            conn.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2], sys.argv[3])
    else:
        sys.exit(client(sys.argv[1:]))

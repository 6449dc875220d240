"""The model server's side of the local backend: runs as the user of the server's slot
(`axle-serve-N`, one user per running server), never as root or as the hub's user, started by
the hub as

    sudo -n -u axle-serve-N -- /usr/bin/env -i PATH=… LANG=C.UTF-8 PYTHON -I -c SOURCE COMMAND ARGS…

with SOURCE the text of this file. Standalone on purpose (standard library only, until the
server itself imports mlflow): handing the source over on the command line means the serving
user needs no read access to the hub's code, and `env -i` means it inherits nothing of the
hub's environment (no Django secret, database URL, encryption keys or MLflow credentials).

    start ROOT TOKEN WORKERS
        ROOT is the slot's folder (the slot user's, setgid to the hub's group, 2750). What an
        earlier occupant of the slot left there is removed first. The model arrives on stdin
        as a stream of files (`pack` writes it; the hub has already fetched it from MLflow and
        checked its sha256). It is written read-only under ROOT/TOKEN/model, then MLflow's
        scoring server (uvicorn) is started in a session of its own, listening on the Unix
        socket ROOT/TOKEN/sock only. Its output goes to ROOT/server.log (readable by the hub's
        group), capped at LOG_CAP bytes with one older copy. Prints {"pid", "start_ticks",
        "boot_id"} and exits; the server outlives it. (The hub builds the paths itself; it
        never takes them from here.)
    stop ROOT TOKEN GRACE
        SIGTERM to every process carrying TOKEN in its environment, SIGKILL to what is left
        after GRACE seconds, then SIGKILL to any other process of the slot's user (one that
        dropped its token), then removes ROOT/TOKEN. Prints {"stopped": true|false}.
"""

import json
import os
import posixpath
import shutil
import signal
import sys
import time
from pathlib import Path

PROC = Path("/proc")
MARKER = "AXLE_LOCAL_SERVING_ID"
# MLflow's scoring server (mlflow/pyfunc/scoring_server/app.py) loads the model named by this
# variable; `mlflow models serve` sets it the same way before it runs uvicorn.
MODEL_PATH_VARIABLE = "__pyfunc_model_path__"
MAX_HEADER = 8192
LOG_NAME = "server.log"
LOG_CAP = 1 << 20  # bytes per log file; one older copy (server.log.1) is kept


# ---------------------------------------------------------------- processes, through /proc


def parse_stat(text):
    """(pid, state, ppid, pgid, start_ticks) of one /proc/<pid>/stat line. The command name
    (field 2) sits in parentheses and may itself hold spaces and parentheses."""
    head, _, rest = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    fields = rest.split()
    # rest starts at field 3 (state); field N is fields[N - 3].
    return pid, fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def read_stat(pid):
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def parse_environ(data):
    out = {}
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def boot_id():
    try:
        return (PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def members(token):
    """Live processes carrying `token` in their environment: the server and whatever it
    spawned, even after leaving its group. Only our own user's environments are readable."""
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = read_stat(int(entry.name))
        if stat is None or stat[1] in ("Z", "X"):
            continue
        try:
            env = parse_environ((entry / "environ").read_bytes())
        except OSError:
            continue
        if env.get(MARKER) == token:
            found.append(stat[0])
    return found


def real_uid(pid):
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def strays():
    """Every other live process of this user. A slot's user serves one server at a time, so
    whatever else runs as it was started by that server, even if it dropped its token."""
    me, found = os.getpid(), []
    for entry in PROC.iterdir():
        if entry.name.isdigit() and int(entry.name) != me and real_uid(entry.name) == os.getuid():
            stat = read_stat(int(entry.name))
            if stat is not None and stat[1] not in ("Z", "X"):
                found.append(stat[0])
    return found


def sweep():
    """SIGKILL every other process of this user; never as root. True when none is left."""
    if os.getuid() == 0:
        return True
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pids = strays()
        if not pids:
            return True
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.1)
    return not strays()


def terminate(token, grace):
    """SIGTERM, then SIGKILL after `grace` seconds, every process carrying `token`."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        pids = members(token)
        if not pids:
            return True
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not members(token):
                return True
            time.sleep(0.1)
    return not members(token)


# ---------------------------------------------------------------- the model, as a stream of files


def files_of(root):
    """The files a model directory consists of, as sorted relative POSIX paths: the same set
    the artifact hash covers (regular files, symlinks followed)."""
    base = Path(root)
    return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())


def pack(root, out):
    """Write the files of `root` to the binary stream `out`: per file one JSON header line
    {"path", "size"} and its bytes, then {"end": <count>}."""
    base = Path(root)
    names = files_of(base)
    for rel in names:
        path = base / rel
        size = path.stat().st_size
        out.write(json.dumps({"path": rel, "size": size}).encode() + b"\n")
        with open(path, "rb") as fh:
            left = size
            while left:
                chunk = fh.read(min(left, 1 << 20))
                if not chunk:
                    raise OSError(f"{rel} shrank while it was sent")
                out.write(chunk)
                left -= len(chunk)
    out.write(json.dumps({"end": len(names)}).encode() + b"\n")
    out.flush()


def _safe_relative(rel):
    if not isinstance(rel, str) or not rel or "\0" in rel or rel.startswith("/") or "\\" in rel:
        raise ValueError(f"refusing the file name {rel!r}")
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts) or posixpath.normpath(rel) != rel:
        raise ValueError(f"refusing the file name {rel!r}")
    return rel


def unpack(stream, dest):
    """Write what `pack` sent into the directory `dest`; returns the number of files."""
    dest = Path(dest)
    count = 0
    while True:
        line = stream.readline(MAX_HEADER)
        if not line.endswith(b"\n"):
            raise ValueError("the model stream broke off")
        header = json.loads(line)
        if "end" in header:
            if header["end"] != count:
                raise ValueError(f"the model stream announced {header['end']} files, {count} arrived")
            return count
        rel, size = _safe_relative(header["path"]), int(header["size"])
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(target, "xb") as fh:
            left = size
            while left:
                chunk = stream.read(min(left, 1 << 20))
                if not chunk:
                    raise ValueError(f"the model stream broke off inside {rel}")
                fh.write(chunk)
                left -= len(chunk)
        count += 1


def _read_only(root):
    for path in sorted(Path(root).rglob("*"), reverse=True):
        path.chmod(0o500 if path.is_dir() else 0o400)
    Path(root).chmod(0o500)


def _writable(root):
    for path in [Path(root), *Path(root).rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o700)


# ---------------------------------------------------------------- commands


def pump(fd, path, cap=LOG_CAP):
    """Copy what arrives on `fd` into the file `path` until every writer has closed it; when
    the file would grow past `cap` bytes it becomes path.1 (replacing the older copy)."""
    out = open(path, "ab")
    try:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except InterruptedError:
                continue
            if not chunk:
                return
            while chunk:
                if out.tell() >= cap:
                    out.close()
                    os.replace(path, f"{path}.1")
                    out = open(path, "ab")
                room = cap - out.tell()
                out.write(chunk[:room])
                chunk = chunk[room:]
            out.flush()
    finally:
        out.close()


def _detach(stdout, stderr):
    """In a forked child: a session of its own (so it outlives this launcher and sudo), and
    none of the launcher's pipes to the hub (the hub reads them to their end)."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null if stdout is None else stdout, 1)
    os.dup2(null if stderr is None else stderr, 2)


def clear_slot(root):
    """Remove what an earlier occupant of the slot left: its folders and logs."""
    for entry in Path(root).iterdir():
        if entry.is_dir() and not entry.is_symlink():
            _writable(entry)
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def start(root, token, workers):
    os.umask(0o027)
    clear_slot(root)
    logfile = Path(root) / LOG_NAME
    log = open(logfile, "a")

    def say(message):
        for stream in (log, sys.stderr):
            print(f"axle: {message}", file=stream, flush=True)

    work = Path(root) / token
    work.mkdir(mode=0o750)
    home, tmp, model, sock = work / "home", work / "tmp", work / "model", work / "sock"
    for folder in (home, tmp, model):
        folder.mkdir(mode=0o700)
    try:
        count = unpack(sys.stdin.buffer, model)
    except (OSError, ValueError) as exc:
        _writable(work)
        shutil.rmtree(work, ignore_errors=True)
        say(f"the model did not arrive: {exc}")
        return 3
    _read_only(model)
    say(f"received {count} model files")
    log.close()
    python = sys.executable
    env = {
        "PATH": f"{Path(python).parent}:/usr/bin:/bin",
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        MODEL_PATH_VARIABLE: model.as_uri(),
        MARKER: token,
    }
    argv = [python, "-m", "uvicorn", "--uds", str(sock), "--workers", str(int(workers))]
    argv += ["mlflow.pyfunc.scoring_server.app:app"]
    readable, writable = os.pipe()
    if os.fork() == 0:  # the log keeper: ends when the server and all it spawned have
        try:
            os.close(writable)
            _detach(None, None)
            pump(readable, logfile)
        finally:
            os._exit(0)
    pid = os.fork()
    if pid == 0:  # the server
        try:
            os.close(readable)
            _detach(writable, writable)
            os.chdir(work)
            os.execve(python, argv, env)
        finally:
            os._exit(127)
    os.close(readable)
    os.close(writable)
    # Until it has exec'd the child is a copy of this launcher; wait for the server itself.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if str(sock).encode() in (PROC / str(pid) / "cmdline").read_bytes():
                break
        except OSError:
            pass
        if os.waitpid(pid, os.WNOHANG)[0]:
            print("axle: the model server exited at once", file=sys.stderr, flush=True)
            _writable(work)
            shutil.rmtree(work, ignore_errors=True)
            return 4
        time.sleep(0.01)
    stat = read_stat(pid)
    print(json.dumps({"pid": pid, "start_ticks": stat[4] if stat else 0, "boot_id": boot_id()}), flush=True)
    return 0


def stop(root, token, grace):
    stopped = terminate(token, float(grace))
    stopped = sweep() and stopped
    work = Path(root) / token
    if work.is_dir():
        _writable(work)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"stopped": stopped}), flush=True)
    return 0


def main(argv):
    command, root, token, extra = argv
    if not token.isalnum():
        print(f"axle: not a server token: {token!r}", file=sys.stderr)
        return 2
    if command == "start":
        return start(root, token, extra)
    if command == "stop":
        return stop(root, token, extra)
    print(f"axle: unknown command {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

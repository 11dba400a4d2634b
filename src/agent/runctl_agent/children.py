"""Process groups of a run: subreaper, supervision token, the watcher and `reap`."""

import os
import signal
import sys
import time

from .constants import EXIT_NO_RUN, EXIT_OK
from .fsutil import print_json, read_json_file
from .rundir import agent_alive


# ---------------------------------------------------------------------------------------------
# process supervision: every process of a run carries the run's token in its environment, so the
# agent (and, once it is gone, its watcher or the client's `reap`) can find and end all of them,
# including ones that left the trainer's process group (setsid, double fork).

TOKEN_ENV = "RUNCTL_SUPERVISION_TOKEN"
SUPERVISION_FILE = "supervision.json"
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper():
    """Makes this process a child subreaper (Linux >= 3.4): orphaned descendants are reparented to it
    rather than to init, so they stay findable and reapable. False where unavailable (macOS)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except Exception:
        return False


def proc_stat(pid):
    """(ppid, pgid, start time in clock ticks since boot, state letter) from /proc, or None."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rfind(b")") + 2:].split()
    try:
        return int(rest[1]), int(rest[2]), int(rest[19]), rest[0].decode("ascii", "replace")
    except (IndexError, ValueError):
        return None


def carries_token(pid, token):
    """Whether the process's environment holds the run's token (False for zombies, other users)."""
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            env = f.read()
    except OSError:
        return False
    return (b"\0%s=%s\0" % (TOKEN_ENV.encode(), token.encode())) in b"\0" + env + b"\0"


def all_pids():
    try:
        return [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return []


def run_processes(token, exclude=()):
    """Live processes of the run (those carrying its token), this process and `exclude` left out."""
    me = os.getpid()
    out = []
    for pid in all_pids():
        if pid == me or pid in exclude:
            continue
        if carries_token(pid, token):
            st = proc_stat(pid)
            if st is not None and st[3] not in ("Z", "X"):
                out.append(pid)
    return out


def kill_group_verified(info, token):
    """SIGKILLs the recorded child's process group, but only while it is still this run's: its
    leader has the recorded start time, or (the leader gone) a member carries the run's token. A
    pgid is never a new pid while any process is in that group, so a verified group is ours."""
    pgid = info.get("pgid") if isinstance(info, dict) else None
    if not isinstance(pgid, int) or pgid <= 1:
        return False
    st = proc_stat(pgid)
    ours = st is not None and st[2] == info.get("startTicks") and st[3] not in ("Z", "X")
    if not ours:
        # Without /proc (macOS) nothing can verify it and the group is left alone.
        ours = any(carries_token(p, token) for p in all_pids() if (proc_stat(p) or (0, 0))[1] == pgid)
    if not ours:
        return False
    try:
        os.killpg(pgid, signal.SIGKILL)
        return True
    except OSError:
        return False


def kill_run_processes(token, exclude=(), rounds=100):
    """SIGKILLs every process of the run until none is left (a fork that races one round is found by
    the next). Returns the pids it killed."""
    killed = set()
    for _ in range(rounds):
        pids = run_processes(token, exclude)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except OSError:
                pass
        time.sleep(0.01)
    return killed


def reap_run(run_dir, token=None):
    """Ends every process of a run whose agent is gone (the watcher's and the client's cleanup):
    the recorded child's process group (verified, see kill_group_verified), then every process
    carrying the run's token. token: the watcher's own (SUPERVISION_FILE may be a newer run's by
    then). Returns how many processes (or groups) it killed."""
    try:
        info = read_json_file(os.path.join(run_dir, SUPERVISION_FILE))
    except (OSError, ValueError):
        info = None
    if not isinstance(info, dict) or not isinstance(info.get("token"), str) or (token is not None and info["token"] != token):
        info = None
    token = token if token is not None else (info or {}).get("token")
    if not token:
        return 0
    killed = 1 if info is not None and kill_group_verified(info.get("child"), token) else 0
    if info is not None and info.get("container"):
        # A container's processes are the runtime's children, not the agent's: remove it by label.
        from .container import remove_run_containers
        killed += remove_run_containers(info["container"], token)
    return killed + len(kill_run_processes(token))


def cmd_watch(run_dir):
    """The watcher (started by the agent in its own session): blocks on a pipe whose only writer is
    the agent; end of file means the agent is gone (exited, or SIGKILLed), and then every process of
    the run is ended, so no trainer ever outlives its supervisor."""
    got = b""
    try:
        while True:
            b = os.read(0, 4096)
            if not b:
                break
            if len(got) < 200:
                got += b
    except OSError:
        pass
    token = got.split(b"\n", 1)[0].decode("ascii", "replace").strip()
    if token:
        reap_run(run_dir, token)
    return EXIT_OK


def cmd_reap(run_dir):
    if not os.path.isdir(run_dir):
        print_json({"error": "no such run directory: %s" % run_dir})
        return EXIT_NO_RUN
    if agent_alive(run_dir):
        print_json({"killed": 0, "agentAlive": True})
        return EXIT_OK
    print_json({"killed": reap_run(run_dir), "agentAlive": False})
    return EXIT_OK

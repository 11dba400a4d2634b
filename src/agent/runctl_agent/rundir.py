"""The run folder's state files: the agent's pid, its liveness, the last event and the exit event."""

import errno
import fcntl
import json
import os


def agent_alive(run_dir):
    """A live agent holds an exclusive flock on RUN_DIR/agent.lock for its whole life.

    Unlike `kill -0 $(cat agent.pid)` this cannot be fooled by pid reuse or by a zombie, and the
    kernel drops the lock the moment the agent dies, even by SIGKILL.
    """
    try:
        fd = os.open(os.path.join(run_dir, "agent.lock"), os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return True
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def read_pid(run_dir):
    try:
        with open(os.path.join(run_dir, "agent.pid")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def last_event(run_dir):
    """The last complete event line of events.jsonl (the exit event, once the run has ended)."""
    path = os.path.join(run_dir, "events.jsonl")
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            data = f.read()
    except OSError:
        return None
    for line in reversed(data.split(b"\n")):
        line = line.strip()
        if not line:
            continue
        try:
            return json.loads(line.decode("utf-8"))
        except ValueError:
            return None
    return None


def exit_event(run_dir):
    ev = last_event(run_dir)
    return ev if isinstance(ev, dict) and ev.get("type") == "exit" else None

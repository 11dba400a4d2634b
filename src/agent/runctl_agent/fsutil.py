"""File helpers: clocks, JSON output, atomic writes, private folders, sha256, safe paths."""

import os
import sys
import time

from . import jsonlite
from .constants import CHUNK


def agent_program():
    """The path this agent was started from (the installed `<folder>/__main__.py`, the built .pyz, or
    the package folder in a source checkout): `python3 <it> <command>` runs the agent again (the
    daemon, the watcher)."""
    return os.path.abspath(sys.argv[0])


def now_ms():
    return int(time.time() * 1000)


def now_iso():
    import datetime  # here, as hashlib and signal below: a start of `sync` does not need them

    t = datetime.datetime.now(datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def print_json(obj):
    sys.stdout.write(jsonlite.dumps(obj) + "\n")
    sys.stdout.flush()


def tmp_name(path):
    d, b = os.path.split(path)
    return os.path.join(d, ".%s.tmp-%d-%s" % (b[:80], os.getpid(), os.urandom(4).hex()))


def atomic_write(path, data, fsync=False, mode=0o600):
    """Write to a temporary name in the same folder, then rename: readers see old or new, never half.
    Private by default (0600): run records hold the user's environment (tokens in spec.json)."""
    tmp = tmp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quiet(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quiet(tmp)
        raise


RUN_DIR_MODE = 0o700


def make_private_dir(path):
    """Create `path` (and missing parents) and make it 0700 even when it existed: a run folder holds
    spec.json with the user's environment, readable by the user only (whatever the umask)."""
    os.makedirs(path, mode=RUN_DIR_MODE, exist_ok=True)
    os.chmod(path, RUN_DIR_MODE)


def _unlink_quiet(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def read_json_file(path):
    try:
        with open(path, "rb") as f:
            return jsonlite.loads(f.read().decode("utf-8"))
    except (OSError, ValueError):
        return None


def sha256_file(path):
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def canonical_json(obj):
    import json  # sorted keys and raw UTF-8: the json package (only the supervisor needs this)

    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def signal_name(signum):
    import signal  # its Signals enum imports enum, ~5 ms of a start that most commands do not need

    try:
        return signal.Signals(signum).name
    except ValueError:
        return "SIG%d" % signum


def safe_rel(name):
    """Normalise a relative path; None when it is absolute, climbs with `..`, or is empty."""
    if not isinstance(name, str) or name.startswith("/") or "\x00" in name:
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return "/".join(parts)

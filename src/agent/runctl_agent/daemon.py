"""launch / supervise / signal / status: starting the detached daemon and reading its state."""

import fcntl
import json
import os
import signal
import sys
import time
import traceback

from .children import SUPERVISION_FILE
from .constants import EXIT_ERROR, EXIT_NOT_RUNNING, EXIT_NO_RUN, EXIT_OK, UsageError
from .fsutil import _unlink_quiet, agent_program, atomic_write, make_private_dir, print_json, read_json_file, signal_name
from .rundir import agent_alive, exit_event, read_pid
from .spec import check_launch_secrets, normalize_spec
from .supervisor import Supervisor


SECRETS_MAX = 60000  # bytes; below a pipe's buffer, so launch writes them before forking


def read_stdin_secrets():
    """The secrets `launch` wrote into this daemon's stdin pipe; stdin becomes /dev/null after."""
    chunks = []
    while True:
        b = os.read(0, 65536)
        if not b:
            break
        chunks.append(b)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    raw = b"".join(chunks)
    try:
        obj = json.loads(raw.decode("utf-8")) if raw.strip() else None
    except ValueError:
        obj = None
    return obj if isinstance(obj, dict) else None


def cmd_supervise(run_dir, secrets_on_stdin=False):
    machine_secrets = read_stdin_secrets() if secrets_on_stdin else None
    return Supervisor(run_dir, machine_secrets).main()


STATE_FILES = ("agent.pid", "exit_code", "status.json", "events.jsonl", "train.log", SUPERVISION_FILE)


def spawn_daemon(run_dir, secrets_payload):
    """Double fork + setsid: the daemon has no controlling terminal, is not a child of the caller,
    and lives in its own session, so closing the SSH session or killing the client leaves it running.

    The daemon is a fresh interpreter (exec of `supervise`). Its stdin is a pipe that already holds
    the launch secrets (written, and the write end closed, before forking: the payload fits the pipe's
    buffer), so they reach it through no file, command line or environment."""
    agent = agent_program()
    python = sys.executable or "python3"
    rfd, wfd = os.pipe()
    try:
        view = memoryview(secrets_payload)
        while view:
            view = view[os.write(wfd, view):]
    finally:
        os.close(wfd)
    try:
        pid = os.fork()
    except BaseException:
        os.close(rfd)
        raise
    if pid:
        os.close(rfd)
        os.waitpid(pid, 0)
        return
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # SIG_IGN survives exec
        devnull = os.open(os.devnull, os.O_RDWR)
        log = os.open(os.path.join(run_dir, "agent.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(rfd, 0)
        os.dup2(devnull, 1)
        os.dup2(log, 2)
        # Inherited descriptors (an SSH channel, a Node pipe) would keep the caller waiting on EOF.
        try:
            fds = [int(x) for x in os.listdir("/proc/self/fd")]
        except OSError:
            fds = range(3, 1024)
        for fd in fds:
            if fd > 2:
                try:
                    os.close(fd)
                except OSError:
                    pass
        os.chdir("/")
        os.execv(python, [python, agent, "supervise", run_dir, "--secrets-stdin"])
    except BaseException:
        try:
            os.write(2, traceback.format_exc().encode())
        finally:
            os._exit(127)


def cmd_launch(run_dir):
    raw = sys.stdin.buffer.read()
    try:
        spec = json.loads(raw.decode("utf-8"))
    except ValueError as e:
        raise UsageError("the spec on stdin is not JSON: %s" % e)
    # Secrets never reach spec.json: taken out here, handed to the daemon through a pipe.
    machine_secrets = check_launch_secrets(spec.pop("secrets", None) if isinstance(spec, dict) else None)
    secrets_payload = json.dumps(machine_secrets or {}, separators=(",", ":")).encode("utf-8")
    if len(secrets_payload) > SECRETS_MAX:
        raise UsageError("spec.secrets is too large")
    normalize_spec(spec, run_dir)  # validate before anything starts
    run_dir = os.path.abspath(run_dir)
    make_private_dir(run_dir)
    lock_fd = os.open(os.path.join(run_dir, ".launch.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        if agent_alive(run_dir):
            print_json({"error": "an agent is already running in %s" % run_dir, "pid": read_pid(run_dir)})
            return EXIT_NOT_RUNNING
        # A relaunch is a new run: stale records would end a follower at once.
        for name in STATE_FILES:
            _unlink_quiet(os.path.join(run_dir, name))
        atomic_write(os.path.join(run_dir, "spec.json"), json.dumps(spec, indent=2).encode("utf-8"))
        try:
            log_start = os.path.getsize(os.path.join(run_dir, "agent.log"))
        except OSError:
            log_start = 0
        spawn_daemon(run_dir, secrets_payload)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pid = read_pid(run_dir)
            if pid:
                print_json({"pid": pid})
                return EXIT_OK
            time.sleep(0.01)
        tail = ""
        try:
            with open(os.path.join(run_dir, "agent.log"), "rb") as f:
                f.seek(log_start)
                tail = f.read()[-2000:].decode("utf-8", "replace")
        except OSError:
            pass
        print_json({"error": "the agent did not start within 30 s", "agentLog": tail})
        return EXIT_ERROR
    finally:
        os.close(lock_fd)


def cmd_signal(run_dir, action):
    sig = {"interrupt": signal.SIGTERM, "kill": signal.SIGUSR1}.get(action)
    if sig is None:
        raise UsageError("signal action must be interrupt or kill")
    if not os.path.isdir(run_dir):
        print_json({"error": "no such run directory: %s" % run_dir})
        return EXIT_NO_RUN
    pid = read_pid(run_dir)
    if not agent_alive(run_dir) or not pid:
        print_json({"error": "no agent is running in %s" % run_dir})
        return EXIT_NOT_RUNNING
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        print_json({"error": "no agent is running in %s" % run_dir})
        return EXIT_NOT_RUNNING
    print_json({"ok": True, "pid": pid, "signal": signal_name(sig)})
    return EXIT_OK


def cmd_status(run_dir):
    if not os.path.isdir(run_dir):
        print_json({"error": "no such run directory: %s" % run_dir})
        return EXIT_NO_RUN
    st = read_json_file(os.path.join(run_dir, "status.json")) or {}
    code = None
    try:
        with open(os.path.join(run_dir, "exit_code")) as f:
            code = int(f.read().strip())
    except (OSError, ValueError):
        pass
    print_json({
        "alive": agent_alive(run_dir),
        "phase": st.get("phase"),
        "exit": exit_event(run_dir),
        "agentPid": st.get("agentPid"),
        "trainerPid": st.get("trainerPid"),
        "heartbeatMs": st.get("heartbeatMs"),
        "exitCode": code,
    })
    return EXIT_OK

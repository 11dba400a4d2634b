"""Supervisor part: starting, waiting for and ending the run's processes."""

import json
import os
import signal
import subprocess
import sys
import time
import traceback

from .children import SUPERVISION_FILE, TOKEN_ENV, all_pids, carries_token, kill_run_processes, proc_stat
from .constants import Aborted, PhaseFailed, TAIL_BYTES
from .fsutil import agent_program, atomic_write, signal_name
from .nodes import node_env


class ChildrenMixin:
    """Supervisor methods; they use the state set up by Supervisor.__init__ (supervisor.py)."""
    # -- child processes

    def run_step(self, argv, label, code, reason, cwd, env, shown=None):
        """Run one setup step with output into train.log; PhaseFailed with the output's tail if it fails."""
        self.check_abort()
        start = os.fstat(self.log_fd).st_size
        self.log_note("$ " + (shown or label))
        self.step_log_start = start
        try:
            proc = self.spawn(argv, cwd, env, "setup")
        except OSError as e:
            self.log_note("%s: %s" % (label, e))
            raise PhaseFailed(code, "%s could not start: %s" % (label, e), reason, self.log_tail(start))
        self.record_child(proc.pid, "setup")
        rc = self.step_ended(self._wait_child(proc))
        if self.abort_reason is not None:
            raise Aborted()
        if rc != 0:
            how = "exit code %d" % rc if rc >= 0 else "signal %s" % signal_name(-rc)
            self.log_note("%s failed (%s)" % (label, how))
            raise PhaseFailed(code, "%s failed (%s)" % (label, how), reason, self.log_tail(start))
        return rc

    def _wait_child(self, proc):
        """Wait for a child (its own process group), relaying cancel/kill/max-duration to the group."""
        self.child_pgid = proc.pid
        try:
            while True:
                self.poll_abort()
                rc = self._exited(proc)
                if rc is not None:
                    return rc
                if self.subreaper:
                    self.adopt_scan(proc.pid)
                time.sleep(0.05)
        except BaseException:
            # The agent itself failed: never leave the child running unsupervised.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
            self.end_run_processes()
            self.remove_containers()
            raise
        finally:
            self.child_pgid = None

    def _exited(self, proc):
        """The child's return code once it has exited, else None.

        Leftovers of its process group (workers, shells) are SIGKILLed before the leader is reaped:
        while the leader is an unreaped zombie its pgid cannot be reused, so killpg hits only them.
        """
        waitid = getattr(os, "waitid", None)
        if waitid is not None:
            try:
                info = waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                info = True
            if info is None:
                return None
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            if proc.pid == self.trainer_pid:
                # The trainer's end is the run's end: what it started outside its group goes too.
                self.end_run_processes()
            return proc.wait()
        rc = proc.poll()
        if rc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            if proc.pid == self.trainer_pid:
                self.end_run_processes()
        return rc

    # -- supervision of every process of the run

    def write_supervision(self, child=None):
        """supervision.json: what the watcher and the client's `reap` need once this agent is gone."""
        info = {
            "version": 1,
            "agentPid": os.getpid(),
            "watcherPid": self.watcher_pid,
            "token": self.token,
            "subreaper": self.subreaper,
            "child": child,
            "container": self.container.info() if self.container is not None else None,
        }
        try:
            atomic_write(self.path(SUPERVISION_FILE), json.dumps(info).encode("utf-8"), mode=0o600)
        except OSError:
            self.debug("%s write failed:\n%s" % (SUPERVISION_FILE, traceback.format_exc()))

    def record_child(self, pid, kind):
        st = proc_stat(pid)
        self.write_supervision({"pid": pid, "pgid": pid, "startTicks": st[2] if st else None, "kind": kind,
                                "containerName": self.container_name})

    def start_watcher(self):
        """A process in its own session that outlives this agent by design: it holds the read end of
        a pipe only this agent writes, so end of file means the agent died (even by SIGKILL), and it
        then ends every process of the run (cmd_watch). The token goes through the pipe first, so the
        watcher of an old agent can never act on a relaunched run's processes."""
        r, w = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable or "python3", agent_program(), "watch", self.run_dir],
                stdin=r, stdout=subprocess.DEVNULL, start_new_session=True, close_fds=True, cwd="/",
            )
            os.write(w, (self.token + "\n").encode("ascii"))
            self.watch_fd = w  # never closed: it closes when this process ends, however it ends
            self.watcher_pid = proc.pid
        except OSError as e:
            os.close(w)
            self.debug("could not start the watcher: %s" % e)
        finally:
            os.close(r)

    def _children(self):
        """This process's children: from /proc/PID/task/TID/children, else (a kernel without
        CONFIG_PROC_CHILDREN) a scan of every process, done at most once a second."""
        me = os.getpid()
        found = set()
        if self.children_files:
            try:
                for tid in os.listdir("/proc/%d/task" % me):
                    with open("/proc/%d/task/%s/children" % (me, tid)) as f:
                        found.update(int(x) for x in f.read().split())
                return found
            except FileNotFoundError:
                self.children_files = False
            except (OSError, ValueError):
                pass
        if time.monotonic() - self.last_full_scan < 1.0:
            return None
        self.last_full_scan = time.monotonic()
        return {p for p in all_pids() if (proc_stat(p) or (0,))[0] == me}

    def adopt_scan(self, current):
        """Notes the run's orphans reparented to this subreaper (while they are alive, so their token
        is readable; each new child is looked at once) and reaps those that have exited. Cheap
        enough for every turn of the wait loop: one small read per thread of the agent."""
        children = self._children()
        if children is None:
            return
        self.not_adopted &= children
        for pid in children:
            if pid != current and pid not in self.adopted and pid not in self.not_adopted:
                if carries_token(pid, self.token):
                    self.adopted.add(pid)
                elif (proc_stat(pid) or (0, 0, 0, "Z"))[3] not in ("Z", "X"):
                    self.not_adopted.add(pid)
        self.reap_adopted(0)

    def reap_adopted(self, wait_s):
        deadline = time.monotonic() + wait_s
        while self.adopted:
            for pid in list(self.adopted):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    self.adopted.discard(pid)
            if not self.adopted or time.monotonic() >= deadline:
                return
            time.sleep(0.01)

    def end_run_processes(self):
        """SIGKILLs every process of the run still alive (daemons that left the trainer's group
        included) and reaps the ones adopted by this subreaper."""
        me = os.getpid()
        killed = kill_run_processes(self.token)
        for pid in killed:
            st = proc_stat(pid)
            if st is not None and st[0] == me:
                self.adopted.add(pid)
        self.reap_adopted(2.0)

    def log_tail(self, start):
        try:
            with open(self.path("train.log"), "rb") as f:
                f.seek(0, os.SEEK_END)
                end = f.tell()
                f.seek(max(start, end - TAIL_BYTES))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return None

    def base_env(self):
        """The environment of setup steps and the trainer (in a container: see container_env)."""
        if self.container is not None:
            return self.container_env(self.venv)
        spec = self.spec
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        for k, v in spec["env"].items():
            if v is None:
                env.pop(str(k), None)
            else:
                env[str(k)] = v if isinstance(v, str) else json.dumps(v)
        env["RUNCTL_RUN_ID"] = spec["runId"]
        env[TOKEN_ENV] = self.token
        env["RUNCTL_CHECKPOINT_DIR"] = spec["checkpoints"]["dir"]
        env["RUNCTL_OUTPUT_DIR"] = spec["outputDir"]
        env["RUNCTL_HPARAMS"] = json.dumps(spec["hyperparams"], separators=(",", ":"))
        env.update(node_env(spec["nodes"], spec["env"]))
        if spec["dataDir"]:
            env["RUNCTL_DATA_DIR"] = spec["dataDir"]
        if self.venv:
            env["VIRTUAL_ENV"] = self.venv
            env["PATH"] = os.path.join(self.venv, "bin") + os.pathsep + env.get("PATH", os.defpath)
            env.pop("PYTHONHOME", None)
        return env

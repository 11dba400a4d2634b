"""Supervisor part: spot interruption notices, the deadline and the machine's shutdown."""

import json
import os
import signal
import subprocess
import time

from .fsutil import signal_name
from .imds import iso_of_epoch, parse_iso_utc


class InterruptionMixin:
    """Supervisor methods; they use the state set up by Supervisor.__init__ (supervisor.py)."""
    def cancel_boot_power_off(self):
        """A machine launched with a boot-time power-off (the backstop for a client that died between
        launch and this agent's start; on EC2 `shutdown -h +N` from the user data) stays up now that
        the agent supervises the run: runs spec.shutdown.cancelBootPowerOff once, only when the spec
        has it. A failure is a warning: the machine would power off mid-run."""
        sd = self.spec.get("shutdown")
        cmd = sd.get("cancelBootPowerOff") if sd else None
        if not cmd:
            return
        try:
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
            problem = None if r.returncode == 0 else "exit %d: %s" % (r.returncode, r.stderr.decode("utf-8", "replace").strip()[-500:])
        except (OSError, subprocess.SubprocessError) as e:
            problem = str(e)
        if problem is not None:
            self.events.emit("warning", message="could not cancel the machine's boot-time power-off (%s): it may power off during the run" % problem)

    def schedule_shutdown(self, reason):
        """Powers the machine off after the run (spec.shutdown; on EC2 that terminates it): at once
        (after a minute for the client to read the end) when a time or budget limit ended the run,
        else after afterRunMs unless the client releases the machine first. The backstop for a
        client that died: a finished run never bills on for a weekend."""
        sd = self.spec.get("shutdown")
        if not sd:
            return
        delay_ms = min(60000, sd["afterRunMs"] or 60000) if reason in ("max-duration", "budget") else sd["afterRunMs"]
        if not delay_ms:
            return
        try:
            subprocess.Popen(
                ["sh", "-c", 'sleep "$1"; shift; exec "$@"', "sh", str(int(delay_ms // 1000))] + list(sd["command"]),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )
            self.events.emit("shutdown-scheduled", inMs=int(delay_ms), reason=reason, command=sd["command"])
        except OSError as e:
            self.events.emit("warning", message="could not schedule the machine's shutdown: %s" % e)

    # -- spot interruptions (the poller thread records; the main thread acts)

    def poller_emit(self, type_, **fields):
        with self.intr_lock:
            if not self.intr_closed:
                self.events.emit(type_, **fields)

    def on_interruption_notice(self, notice):
        """Poller thread: the first spot/instance-action notice. Records it; the main thread acts."""
        cfg = self.spec["interruption"]
        arrived_mono, arrived = time.monotonic(), time.time()
        when = parse_iso_utc(notice.get("time"))
        if when is not None:
            deadline = when - cfg["reserveMs"] / 1000.0
        else:
            deadline = arrived + (cfg["noticeWindowMs"] - cfg["reserveMs"]) / 1000.0
        deadline = max(deadline, arrived)  # a late notice: flush at once
        action = notice.get("action")
        with self.intr_lock:
            if self.interruption is not None or self.intr_closed:
                return
            self.events.emit(
                "interruption",
                action=action if isinstance(action, str) else None,
                noticeTime=iso_of_epoch(when) if when is not None else None,
                deadline=iso_of_epoch(deadline),
            )
            self.interruption = {
                "arrived": arrived_mono,
                "deadline": arrived_mono + (deadline - arrived),
                "acted": False,  # the main thread has seen it
                "flushing": False,  # the flush deadline has been reached
                "killed": False,  # the trainer outlived the flush deadline and was SIGKILLed
                "committed": False,  # the deadline's commit pass ran while the trainer was alive
                "handled": False,  # interruption-handled recorded
            }
        self.debug("spot interruption notice: %s" % json.dumps(notice))

    def _act_on_interruption(self, intr):
        intr["acted"] = True
        if self.trainer_done:
            return  # the trainer has already ended: its result stands; teardown goes on
        if self.abort_reason is None:
            self.abort_reason = "interruption"
            self.term_deadline = intr["deadline"]
            sig = getattr(signal, self.spec["interruption"]["signal"])
            self.debug("interruption: %s to process group %s" % (signal_name(sig), self.child_pgid))
            self.signal_child(sig)
        elif not self.kill_sent:
            # A cancel or max-duration is under way: it must be over before the machine is.
            self.term_deadline = min(self.term_deadline or intr["deadline"], intr["deadline"])

    def _trainer_running(self):
        if self.trainer_pid is None or self.trainer_done:
            return False
        waitid = getattr(os, "waitid", None)
        if waitid is None:
            return True
        try:
            return waitid(os.P_PID, self.trainer_pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            return False

    def _interruption_deadline(self):
        """Main thread, at the flush deadline: commit what is finished, record it, SIGKILL what is left."""
        intr = self.interruption
        if intr["flushing"]:
            return  # poll_abort runs again inside the commit pass
        intr["flushing"] = True
        if self._trainer_running():
            # The trainer is still alive, so a checkpoint it is still writing is not finished: only
            # entries with a .done marker or a settled signature are committed, and none after the kill.
            self._flush_commits(final=False)
            if self._trainer_running():
                intr["killed"] = intr["committed"] = True
                self._emit_handled(trainer_exited=False)
                self.debug("interruption: the trainer outlived the flush deadline; SIGKILL")
                self.kill_sent = True
                self.signal_child(signal.SIGKILL)
            # else it exited during the pass: teardown's final pass commits the rest, as after any exit
            return
        if not self.trainer_done and self.child_pgid:
            self.kill_sent = True  # a setup step: nothing to flush
            self.signal_child(signal.SIGKILL)

    def _emit_handled(self, trainer_exited):
        intr = self.interruption
        if intr is None or intr["handled"]:
            return
        intr["handled"] = True
        last = self.watcher.committed[-1] if self.watcher is not None and self.watcher.committed else None
        self.events.emit(
            "interruption-handled",
            trainerExited=bool(trainer_exited),
            checkpoint=last["name"] if last else None,
            step=last.get("step") if last else None,
            flushMs=int((time.monotonic() - intr["arrived"]) * 1000),
        )

"""The Supervisor: one run's state, abort handling and the main phase sequence."""

import fcntl
import hashlib
import json
import os
import secrets
import signal
import sys
import threading
import time
import traceback

from .children import become_subreaper
from .constants import Aborted, EXIT_NOT_RUNNING, EXIT_OK, PhaseFailed, UsageError
from .events import EventLog
from .fsutil import atomic_write, canonical_json, now_iso, now_ms, read_json_file, signal_name
from .imds import InterruptionPoller
from .progress import Progress
from .spec import normalize_spec
from .storage_dir import StorageError
from .storage_s3 import check_descriptor
from .sup_children import ChildrenMixin
from .sup_commits import CommitsMixin
from .sup_container import ContainerMixin
from .sup_interrupt import InterruptionMixin
from .sup_setup import SetupMixin
from .sup_storage import StorageMixin


STOP_WORDS = {"cancel": "cancel", "kill": "kill", "time-limit": "max-duration"}


def read_stop_marker(path):
    """What a SIGTERM/SIGINT means in `node` mode: the stop marker's word (cancel, kill, time-limit:
    the client or the batch script wrote it before signalling), else a preemption or requeue by
    Slurm, after which the run goes on in the requeued job."""
    try:
        with open(path, "rb") as f:
            word = f.read(64).decode("utf-8", "replace").strip()
    except OSError:
        word = ""
    return STOP_WORDS.get(word, "preempted")


class Supervisor(InterruptionMixin, ChildrenMixin, ContainerMixin, SetupMixin, StorageMixin, CommitsMixin):
    def __init__(self, run_dir, machine_secrets=None, stop_marker=None):
        self.run_dir = os.path.abspath(run_dir)
        # `node` mode (a Slurm job step): a SIGTERM/SIGINT means what this file says (read_stop_marker).
        self.stop_marker = stop_marker
        # Launch secrets live only in this process's memory: handed to boto3 sessions or to the
        # environment of aws subprocesses, never to files, events, the trainer or os.environ.
        self.aws_creds = (machine_secrets or {}).get("aws")
        self.secret_values = sorted(
            (v for v in (self.aws_creds or {}).values() if isinstance(v, str) and len(v) >= 4), key=len, reverse=True
        )
        self.t0 = time.monotonic()
        self.phase = "starting"
        self.trainer_pid = None
        self.child_pgid = None  # process group of whatever child runs now (setup step or trainer)
        self.pending_signals = []  # filled by signal handlers, drained by the main thread only
        self.abort_reason = None  # cancel | kill | max-duration | budget | interruption | preempted
        self.term_deadline = None
        self.kill_sent = False
        self.trainer_done = False
        self.stop_commits = False
        self.interruption = None  # the first spot notice: see on_interruption_notice
        self.intr_lock = threading.Lock()
        self.intr_closed = False  # set just before the exit event: the poller records nothing after it
        self.poller = None
        self.status_lock = threading.Lock()
        self.hb_stop = threading.Event()
        self.events = None
        self.watcher = None
        self.early_watcher = None  # made (and its storage listed) before the data phase, started with training
        self.trainer_rc = None  # the trainer's wait status (negative: killed by that signal) once it ended
        self.venv = None
        self.container = None  # the ContainerRuntime when spec.container is set
        self.container_name = None  # the container of the step running now
        self.step_log_start = 0
        self.ckpt_storage = None
        self.out_storage = None
        self.resume_storage = None
        self.data_storages = {}
        self.spec = {"limits": {"graceMs": 0, "maxDurationMs": None}}  # until spec.json is read
        # Supervision (see reap_run): the token marks every process of this run; adopted holds the
        # orphans of the run reparented to this subreaper, reaped by pid (never waitpid(-1), which
        # would steal the status of the agent's own subprocesses).
        self.token = secrets.token_hex(16)
        self.subreaper = False
        self.adopted = set()
        self.watcher_pid = None
        self.watch_fd = None
        self.not_adopted = set()  # children seen without the token (the agent's own, e.g. the aws CLI)
        self.children_files = True  # /proc/PID/task/TID/children exists (CONFIG_PROC_CHILDREN)
        self.last_full_scan = 0.0

    # -- plumbing

    def redact(self, text):
        for v in self.secret_values:
            if v in text:
                text = text.replace(v, "***")
        return text

    def debug(self, msg):
        try:
            sys.stderr.write("[%s] %s\n" % (now_iso(), self.redact(msg)))
            sys.stderr.flush()
        except Exception:
            pass

    def path(self, name):
        return os.path.join(self.run_dir, name)

    def progress(self, phase, total, name=None):
        """A throttled byte counter that reports `progress` events (progress.py)."""
        return Progress(lambda **fields: self.events.emit("progress", **fields), phase, total, name)

    def log_note(self, text):
        """A line of the agent's own in train.log, so setup steps are readable next to their output."""
        os.write(self.log_fd, ("[runctl] %s\n" % self.redact(text)).encode("utf-8", "replace"))

    def write_status(self):
        with self.status_lock:
            st = {
                "phase": self.phase,
                "agentPid": os.getpid(),
                "trainerPid": self.trainer_pid,
                "heartbeatMs": now_ms(),
            }
            try:
                atomic_write(self.path("status.json"), json.dumps(st).encode("utf-8"))
            except OSError:
                self.debug("status.json write failed:\n" + traceback.format_exc())

    def set_phase(self, phase, emit=True):
        repeated = phase == self.phase  # e.g. "setup" for the image, then for the venv: one event
        self.phase = phase
        if emit and not repeated:
            self.events.emit("phase", phase=phase)
        self.write_status()

    def _heartbeat(self):
        while not self.hb_stop.wait(1.0):
            self.write_status()

    def elapsed_ms(self):
        return int((time.monotonic() - self.t0) * 1000)

    # -- signals and limits (sending happens on the main thread only, never in a handler)

    def _on_signal(self, signum, _frame):
        if signum == signal.SIGUSR1:
            self.pending_signals.append("kill")
        else:
            self.pending_signals.append("term" if self.stop_marker else "cancel")

    def poll_abort(self):
        while self.pending_signals:
            what = self.pending_signals.pop(0)
            self._request(read_stop_marker(self.stop_marker) if what == "term" else what)
        max_ms = self.spec["limits"].get("maxDurationMs")
        if max_ms is not None and self.abort_reason is None and not self.trainer_done and self.elapsed_ms() >= max_ms:
            self._request("max-duration")
        budget = self.spec["limits"].get("budget")
        if budget and budget["hourlyUsd"] > 0 and self.abort_reason is None and not self.trainer_done:
            # The machine's own clock keeps the budget even when no client is watching.
            allowed_ms = (budget["maxUsd"] - budget["spentUsd"]) / budget["hourlyUsd"] * 3600000.0
            if self.elapsed_ms() >= allowed_ms:
                self._request("budget")
        intr = self.interruption
        if intr is not None and not intr["acted"]:
            self._act_on_interruption(intr)
        if self.term_deadline is not None and not self.kill_sent and time.monotonic() >= self.term_deadline:
            if self.abort_reason == "interruption":
                self._interruption_deadline()
            else:
                self._send(signal.SIGKILL, self.abort_reason)

    def _request(self, what):
        if self.trainer_done:
            # The trainer has ended; only a kill matters now: it stops the final commits.
            self.debug("%s requested after the trainer exited" % what)
            if what == "kill":
                self.stop_commits = True
            return
        if what == "kill":
            if self.kill_sent:
                return
            if self.abort_reason != "interruption":  # a kill cuts a flush short but does not hide the notice
                self.abort_reason = "kill"
            self._send(signal.SIGKILL, "kill")
            return
        if self.abort_reason is not None:
            return  # already stopping
        self.abort_reason = what
        self.term_deadline = time.monotonic() + self.spec["limits"]["graceMs"] / 1000.0
        self._send(signal.SIGTERM, what)

    def _send(self, sig, reason):
        self.events.emit("signal", signal=signal_name(sig), reason=reason)
        if sig == signal.SIGKILL:
            self.kill_sent = True
        self.signal_child(sig)

    def check_abort(self):
        self.poll_abort()
        if self.abort_reason is not None:
            raise Aborted()

    # -- main

    def main(self):
        fcntl_fd = os.open(self.path("agent.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + 5
        while True:
            try:
                fcntl.flock(fcntl_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                # A status probe holds it for microseconds; a second agent holds it for good.
                if time.monotonic() > deadline:
                    self.debug("another agent owns %s" % self.run_dir)
                    return EXIT_NOT_RUNNING
                time.sleep(0.02)
        self.lock_fd = fcntl_fd  # kept open (and locked) until this process ends
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.events = EventLog(self.path("events.jsonl"), self.path("train.log"), redact=self.redact)
        self.log_fd = os.open(self.path("train.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.subreaper = become_subreaper()
        self.start_watcher()
        self.write_supervision()
        atomic_write(self.path("agent.pid"), ("%d\n" % os.getpid()).encode())
        self.write_status()
        hb = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        hb.start()
        self.debug("agent %d supervising %s" % (os.getpid(), self.run_dir))

        status, reason, exit_code, sig_name = "failed", "agent", None, None
        self.resume_from = None
        self.restored = None
        try:
            try:
                self.spec = spec = normalize_spec(read_json_file(self.path("spec.json")), self.run_dir)
            except UsageError as e:
                raise PhaseFailed("AGENT_FAILED", "invalid spec.json: %s" % e, "agent")
            self.hp_hash = hashlib.sha256(canonical_json(spec["hyperparams"]).encode("utf-8")).hexdigest()
            self.cancel_boot_power_off()
            self.open_container()
            if spec["interruption"] is not None:
                self.poller = InterruptionPoller(self, spec["interruption"])
                self.poller.start()
            try:
                # Descriptors are checked now; clients are made after setup (which may install them).
                if spec["checkpoints"]["storage"] is not None:
                    check_descriptor(spec["checkpoints"]["storage"])
                if spec["resume"] is not None:
                    check_descriptor(spec["resume"].get("storage"))
                    if spec["resume"]["orElse"] is not None:
                        check_descriptor(spec["resume"]["orElse"].get("storage"))
                if spec["outputs"] is not None:
                    check_descriptor(spec["outputs"]["storage"])
                for item in spec["data"]:
                    if item["source"].get("kind") == "s3":
                        check_descriptor(item["source"])
            except StorageError as e:
                raise PhaseFailed("AGENT_FAILED", str(e), "agent")
            for d in (spec["workdir"], spec["outputDir"], spec["checkpoints"]["dir"]):
                os.makedirs(d, exist_ok=True)
            self.check_abort()
            self.prepare_container()
            self.phase_setup()
            self.check_abort()
            self.open_storages()
            self.phase_data()
            if spec["dataDir"]:
                os.makedirs(spec["dataDir"], exist_ok=True)
            rc = self.phase_training()
            if rc < 0:
                sig_name = signal_name(-rc)
            else:
                exit_code = rc
            if self.abort_reason in ("interruption", "preempted"):
                status, reason = "interrupted", self.abort_reason
            elif self.abort_reason in ("cancel", "kill"):
                status, reason = "canceled", self.abort_reason
            elif self.abort_reason in ("max-duration", "budget"):
                status, reason = "failed", self.abort_reason
            else:
                status, reason = ("succeeded" if rc == 0 else "failed"), "exit"
        except Aborted:
            if self.abort_reason in ("interruption", "preempted"):
                status = "interrupted"
            else:
                status = "canceled" if self.abort_reason in ("cancel", "kill") else "failed"
            reason = self.abort_reason
        except PhaseFailed as e:
            self.events.emit("error", code=e.code, message=e.message, outputTail=e.output_tail)
            status, reason = "failed", e.reason
        except Exception as e:
            self.debug(traceback.format_exc())
            if self.child_pgid:
                try:
                    os.killpg(self.child_pgid, signal.SIGKILL)
                except OSError:
                    pass
            self.end_run_processes()
            self.remove_containers()
            self.events.emit("error", code="AGENT_FAILED", message="agent error: %s: %s" % (type(e).__name__, e), outputTail=None)
            status, reason = "failed", "agent"
        self.trainer_done = True
        self.end_run_processes()  # nothing of the run outlives it (setup-step daemons included)
        self.remove_containers()
        if self.trainer_pid is not None or self.watcher is not None:
            self.set_phase("teardown")
            self.final_commits()
            if self.interruption is not None and self.interruption["acted"]:
                self._emit_handled(trainer_exited=self.trainer_pid is not None and not self.interruption["killed"])
            try:
                self.upload_outputs()
            except Exception as e:
                self.debug("output upload failed:\n" + traceback.format_exc())
                self.events.emit("warning", message="uploading the outputs failed: %s" % e)
        if self.poller is not None:
            self.poller.stop()
        with self.intr_lock:
            self.intr_closed = True  # nothing from the poller after this: `exit` stays the last event
        if self.interruption is not None:
            # Setup/data steps stopped by it, or a notice that came during teardown.
            self._emit_handled(trainer_exited=self.trainer_pid is not None and not self.interruption["killed"])
        if exit_code is not None:
            file_code = exit_code
        elif sig_name is not None:
            file_code = 128 + int(getattr(signal, sig_name, 0))
        else:
            file_code = 1  # the trainer never ran: a phase failed or the run was stopped before it
        try:
            atomic_write(self.path("exit_code"), ("%d\n" % file_code).encode(), fsync=True)
        except OSError:
            self.debug(traceback.format_exc())
        self.schedule_shutdown(reason)
        self.events.emit(
            "exit", status=status, exitCode=exit_code, signal=sig_name, durationMs=self.elapsed_ms(), reason=reason,
        )
        self.hb_stop.set()
        hb.join()
        self.phase = "done"
        self.write_status()
        self.debug("run ended: %s (%s)" % (status, reason))
        return EXIT_OK

"""`follow`: streaming the log and events as frames."""

import json
import os
import sys
import time

from .constants import CHUNK, EXIT_LOST, EXIT_NO_RUN, EXIT_OK, FOLLOW_HB_S, FOLLOW_MAX_LINE, FOLLOW_POLL_S
from .fsutil import now_ms, print_json, read_json_file
from .rundir import agent_alive, read_pid


class Follower:
    """Streams frames from a run folder. With max_wait_ms / max_bytes (bounded mode, for transports
    that return output only when a command ends, such as SSM) it stops with a `pause` frame once
    either is reached, so the client calls again from the cursor it has."""

    # Room kept in the byte budget for the frame that ends the call (`pause` or `end`).
    CLOSING_RESERVE = len('{"k":"pause"}\n')

    # With heartbeat liveness: an agent whose status.json heartbeat has not changed for this long is gone.
    HEARTBEAT_STALE_S = 10.0

    def __init__(self, run_dir, log_off, ev_off, max_wait_ms=None, max_bytes=None, liveness="lock"):
        self.run_dir = run_dir
        # "heartbeat": the agent runs on another node of a shared filesystem (a Slurm job), where
        # flock may be node-local (BeeGFS, Lustre localflock, NFS nolock): a heartbeat that keeps
        # changing also counts as alive, judged on this process's own clock (no clock skew).
        self.heartbeat = liveness == "heartbeat"
        self.hb_value = None
        self.hb_seen = None
        self.log_path = os.path.join(run_dir, "train.log")
        self.ev_path = os.path.join(run_dir, "events.jsonl")
        self.log_off = log_off
        self.ev_off = ev_off
        self.sent = 0
        self.bytes_sent = 0
        self.max_bytes = max_bytes
        self.deadline = None if max_wait_ms is None else time.monotonic() + max_wait_ms / 1000.0
        self.full = False  # the byte budget is spent: the call pauses at the next chance
        # A client resuming from a cursor just past the exit event (it lost the connection, or an
        # earlier bounded call paused while draining) gets the rest of the log and `end`.
        self.exit_seen = self._exit_before(ev_off)
        self.out = sys.stdout

    def send(self, frame):
        text = json.dumps(frame, separators=(",", ":")) + "\n"
        self.out.write(text)
        self.sent += 1
        self.bytes_sent += len(text)

    def offer(self, frame):
        """Send a log or event frame if it fits the byte budget; the first always does, so every
        call makes progress. False (and nothing sent) once the budget is spent."""
        if self.max_bytes is not None:
            text = json.dumps(frame, separators=(",", ":")) + "\n"
            if self.bytes_sent > 0 and self.bytes_sent + len(text) + self.CLOSING_RESERVE > self.max_bytes:
                self.full = True
                return False
            self.out.write(text)
            self.sent += 1
            self.bytes_sent += len(text)
            return True
        self.send(frame)
        return True

    def pause(self):
        self.send({"k": "pause"})
        self.out.flush()
        return EXIT_OK

    @staticmethod
    def _read(path, off):
        try:
            with open(path, "rb") as f:
                f.seek(off)
                return f.read(FOLLOW_MAX_LINE)
        except OSError:
            return b""

    def _exit_before(self, off):
        """Whether the last complete event line before byte `off` of events.jsonl is the exit event."""
        if off <= 0:
            return False
        start = max(0, off - 65536)
        try:
            with open(self.ev_path, "rb") as f:
                f.seek(start)
                data = f.read(off - start)
        except OSError:
            return False
        if not data.endswith(b"\n"):
            return False
        try:
            ev = json.loads(data[:-1].rsplit(b"\n", 1)[-1].decode("utf-8"))
        except ValueError:
            return False
        return isinstance(ev, dict) and ev.get("type") == "exit"

    def pump_log(self, final=False, upto=None):
        """Send complete lines from log_off (not past byte `upto` when given); with final, also the
        unterminated rest. True if any."""
        any_sent = False
        # A bounded amount per poll while running, so a chatty trainer cannot starve events.
        for _ in range(1 << 30 if final or upto is not None else 16):
            if self.full:
                return any_sent
            data = self._read(self.log_path, self.log_off)
            if upto is not None:
                data = data[: max(0, upto - self.log_off)]
            if not data:
                return any_sent
            nl = data.rfind(b"\n")
            if nl >= 0:
                lines = data[:nl].split(b"\n")
            elif final or len(data) >= FOLLOW_MAX_LINE:
                lines = [data]  # the final unterminated line, or a piece of an over-long one
            else:
                return any_sent
            for line in lines:
                end = self.log_off + len(line) + (1 if nl >= 0 else 0)
                if line.endswith(b"\r"):
                    line = line[:-1]
                if not self.offer({"k": "log", "o": end, "l": line.decode("utf-8", "replace")}):
                    return any_sent  # the rest goes in the next call, from this offset
                self.log_off = end
                any_sent = True
        return any_sent

    def _skip_line(self, off):
        """The offset just past the line starting at off, or None while its newline is not written."""
        try:
            with open(self.ev_path, "rb") as f:
                f.seek(off)
                pos = off
                while True:
                    chunk = f.read(CHUNK)
                    if not chunk:
                        return None
                    nl = chunk.find(b"\n")
                    if nl >= 0:
                        return pos + nl + 1
                    pos += len(chunk)
        except OSError:
            return None

    def pump_events(self):
        any_sent = False
        while not self.exit_seen and not self.full:
            data = self._read(self.ev_path, self.ev_off)
            end = data.rfind(b"\n")
            if end < 0:
                if len(data) >= FOLLOW_MAX_LINE:
                    # A line longer than a read (an agent before events were bounded): skip it with
                    # a warning in its place rather than stall on it forever.
                    skipped = self._skip_line(self.ev_off)
                    if skipped is None:
                        return any_sent  # not all written yet
                    ev = {"type": "warning", "message": "an event line of %d bytes could not be read and was skipped" % (skipped - self.ev_off)}
                    if not self.offer({"k": "ev", "o": skipped, "e": ev}):
                        return any_sent
                    self.ev_off = skipped
                    any_sent = True
                    continue
                return any_sent
            for line in data[: end + 1].split(b"\n")[:-1]:
                nxt = self.ev_off + len(line) + 1
                try:
                    ev = json.loads(line.decode("utf-8"))
                except ValueError:
                    self.ev_off = nxt
                    continue
                # Lines written before this event go first: the stream keeps the real order.
                upto = ev.get("logOffset") if isinstance(ev, dict) else None
                if isinstance(upto, int) and upto > self.log_off:
                    self.pump_log(upto=upto)
                    if self.full:
                        return any_sent  # this event waits for its earlier lines (next call)
                if not self.offer({"k": "ev", "o": nxt, "e": ev}):
                    return any_sent
                self.ev_off = nxt
                any_sent = True
                if isinstance(ev, dict) and ev.get("type") == "exit":
                    self.exit_seen = True
                    break
            if len(data) < FOLLOW_MAX_LINE:
                return any_sent
        return any_sent

    def finish(self):
        self.pump_log(final=True)
        if self.full:
            return self.pause()  # the next call resumes the drain (the exit is before its cursor)
        self.send({"k": "end"})
        self.out.flush()
        return EXIT_OK

    def agent_alive(self, now):
        if agent_alive(self.run_dir):
            return True
        if not self.heartbeat:
            return False
        st = read_json_file(os.path.join(self.run_dir, "status.json")) or {}
        if st.get("phase") == "done":
            return False
        value = st.get("heartbeatMs")
        if value is None:
            return False
        if value != self.hb_value or self.hb_seen is None:
            self.hb_value, self.hb_seen = value, now
        return now - self.hb_seen < self.HEARTBEAT_STALE_S

    def run(self):
        last_sent = time.monotonic()
        last_alive = 0.0
        while True:
            # The log only grows, so an event written after this size was read has a logOffset at
            # or past it: sending events (each preceded by its earlier lines) and then the log up to
            # this size keeps lines and events in the order they happened.
            try:
                limit = os.path.getsize(self.log_path)
            except OSError:
                limit = 0
            sent = self.pump_events()
            sent = self.pump_log(upto=limit) or sent
            if self.exit_seen:
                return self.finish()
            if self.full:
                return self.pause()
            now = time.monotonic()
            if sent:
                last_sent = now
            elif now - last_sent >= FOLLOW_HB_S:
                st = read_json_file(os.path.join(self.run_dir, "status.json")) or {}
                self.send({"k": "hb", "t": now_ms(), "phase": st.get("phase")})
                last_sent = now
            self.out.flush()
            if now - last_alive >= 1.0:
                last_alive = now
                if not self.agent_alive(now):
                    # The exit event may have landed just before the agent ended: look once more.
                    time.sleep(0.5)
                    self.pump_log()
                    self.pump_events()
                    if self.exit_seen:
                        return self.finish()
                    if self.full:
                        return self.pause()
                    self.send({"k": "lost", "message": "the agent (pid %s) is gone without an exit record" % read_pid(self.run_dir)})
                    self.out.flush()
                    return EXIT_LOST
            if self.deadline is not None and time.monotonic() >= self.deadline:
                return self.pause()
            time.sleep(FOLLOW_POLL_S)


def cmd_follow(run_dir, log_off, ev_off, max_wait_ms=None, max_bytes=None, liveness="lock"):
    if not os.path.isdir(run_dir):
        print_json({"error": "no such run directory: %s" % run_dir})
        return EXIT_NO_RUN
    try:
        return Follower(run_dir, log_off, ev_off, max_wait_ms, max_bytes, liveness).run()
    except BrokenPipeError:
        # The reader went away (client closed the channel): nothing left to do.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        except OSError:
            pass
        return EXIT_OK

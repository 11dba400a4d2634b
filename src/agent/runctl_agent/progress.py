"""Byte progress of a transfer (data download, checkpoint commit, output upload) as `progress`
events, throttled: the first report, then at most one every PROGRESS_INTERVAL_S, and always the
final one (bytesDone == bytesTotal; a failed transfer ends with its total lowered to the bytes
moved). Thread-safe: upload workers report from several threads."""

import threading
import time

PROGRESS_INTERVAL_S = 0.25


class Progress:
    def __init__(self, emit, phase, total, name=None, interval_s=PROGRESS_INTERVAL_S, clock=time.monotonic):
        """emit(**fields) writes one event (EventLog.emit bound to "progress")."""
        self.emit = emit
        self.phase = phase
        self.total = max(0, int(total))
        self.name = name
        self.interval_s = interval_s
        self.clock = clock
        self.done = 0
        self.last_at = None
        self.finished = False
        self.lock = threading.Lock()

    def add(self, nbytes):
        """nbytes more were moved; reports when the throttle allows (always at 100%)."""
        with self.lock:
            self.done = min(self.total, self.done + max(0, int(nbytes)))
            self._maybe(self.done >= self.total)

    def finish(self):
        """The transfer ended: reports 100% unless that was already reported."""
        with self.lock:
            self.done = self.total
            self._maybe(True)

    def abandon(self):
        """The transfer failed part-way: reports its end with the total lowered to the bytes moved,
        so every transfer ends with bytesDone == bytesTotal (a progress bar can close)."""
        with self.lock:
            self.total = self.done
            self._maybe(True)

    def _maybe(self, final):
        if self.finished:
            return
        now = self.clock()
        if not final and self.last_at is not None and now - self.last_at < self.interval_s:
            return
        self.last_at = now
        self.finished = final
        fields = {"phase": self.phase, "bytesDone": self.done, "bytesTotal": self.total}
        if self.name is not None:
            fields["name"] = self.name
        try:
            self.emit(**fields)
        except Exception:
            pass  # progress is advisory: never fail a transfer for it

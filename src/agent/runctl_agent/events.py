"""events.jsonl: the bounded event line and the append-only EventLog."""

import json
import os
import threading

from .fsutil import now_iso


EVENT_MAX_BYTES = 15000  # every events.jsonl line is shorter, so an event frame fits one bounded follow call
EVENT_FIELD_MAX = 8192  # a longer string field keeps its head and tail around a marker
EVENT_CORE_FIELDS = ("seq", "time", "type", "logOffset")


def _cut_text(text, limit):
    """text cut in the middle with a marker, so its JSON form (ASCII escapes) fits in limit bytes."""
    n = len(text)
    keep = min(limit, n)
    while True:
        half = keep // 2
        cut = "%s\n...[runctl: %d characters cut]...\n%s" % (text[:half], n - 2 * half, text[n - half:] if half else "")
        if len(json.dumps(cut)) <= limit or keep == 0:
            return cut
        keep //= 2


def bounded_event_json(ev):
    """The event's JSON line, shorter than EVENT_MAX_BYTES: long strings are cut in the middle (head
    and tail kept, with a marker), the biggest first, and a big non-string value is replaced by a
    marker; `truncated` lists the fields changed. Readers take lines of up to 1 MiB, far above."""
    line = json.dumps(ev, separators=(",", ":"))  # ensure_ascii: its length is its size in bytes
    if len(line) < EVENT_MAX_BYTES:
        return line
    ev = dict(ev)
    cut = []
    for k, v in list(ev.items()):
        if k not in EVENT_CORE_FIELDS and isinstance(v, str) and len(json.dumps(v)) > EVENT_FIELD_MAX:
            ev[k] = _cut_text(v, EVENT_FIELD_MAX)
            cut.append(k)
    while True:
        ev["truncated"] = cut
        line = json.dumps(ev, separators=(",", ":"))
        if len(line) < EVENT_MAX_BYTES:
            return line
        size, k = max((len(json.dumps(v)), k) for k, v in ev.items() if k not in EVENT_CORE_FIELDS + ("truncated",))
        v = ev[k]
        if isinstance(v, str) and size > 512:
            ev[k] = _cut_text(v, size // 2)
        elif size < 200:
            del ev[k]  # a marker would be no shorter (an event of very many small fields)
        else:
            ev[k] = "[runctl: a value of %d bytes was dropped: events are bounded to %d bytes]" % (size, EVENT_MAX_BYTES)
        if k not in cut:
            cut.append(k)


class EventLog:
    def __init__(self, path, log_path=None, redact=None):
        # Each event records how long train.log was when it happened, so a follower can put log
        # lines and events back in their true order.
        self.log_path = log_path
        self.redact = redact  # str -> str: takes secret values out of every string field
        self.lock = threading.Lock()
        self.seq = 0
        try:
            with open(path, "rb") as f:
                self.seq = sum(1 for line in f if line.strip())
        except OSError:
            pass
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def emit(self, type_, **fields):
        with self.lock:
            self.seq += 1
            ev = {"seq": self.seq, "time": now_iso(), "type": type_}
            if self.log_path is not None:
                try:
                    ev["logOffset"] = os.path.getsize(self.log_path)
                except OSError:
                    ev["logOffset"] = 0
            for k, v in fields.items():
                if k not in ("seq", "time", "type", "logOffset"):  # these belong to the event itself
                    ev[k] = self.redact(v) if self.redact is not None and isinstance(v, str) else v
            line = (bounded_event_json(ev) + "\n").encode("utf-8")
            # One write on an O_APPEND fd: a reader never sees two events interleaved.
            os.write(self.fd, line)
            if type_ == "exit":
                os.fsync(self.fd)
            return ev

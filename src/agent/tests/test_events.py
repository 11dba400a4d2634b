"""events: every line stays under EVENT_MAX_BYTES; EventLog numbers, offsets and redacts."""

import json
import os
import shutil
import tempfile
import unittest

from runctl_agent.events import EVENT_FIELD_MAX, EVENT_MAX_BYTES, EventLog, bounded_event_json


class BoundedEvent(unittest.TestCase):
    def test_a_small_event_is_unchanged(self):
        ev = {"seq": 1, "time": "t", "type": "phase", "phase": "setup"}
        self.assertEqual(bounded_event_json(ev), json.dumps(ev, separators=(",", ":")))

    def test_a_long_string_keeps_head_and_tail(self):
        text = "H" * 20000 + "T" * 20000
        line = bounded_event_json({"seq": 1, "time": "t", "type": "error", "message": text})
        self.assertLess(len(line), EVENT_MAX_BYTES)
        ev = json.loads(line)
        self.assertEqual(ev["truncated"], ["message"])
        self.assertTrue(ev["message"].startswith("HHHH") and ev["message"].endswith("TTTT"))
        self.assertRegex(ev["message"], r"\.\.\.\[runctl: \d+ characters cut\]\.\.\.")
        self.assertLessEqual(len(json.dumps(ev["message"])), EVENT_FIELD_MAX)

    def test_non_ascii_is_measured_escaped(self):
        line = bounded_event_json({"seq": 1, "time": "t", "type": "warning", "message": "\u00e9" * 9000})
        self.assertLess(len(line.encode("utf-8")), EVENT_MAX_BYTES)

    def test_big_non_string_values_and_many_fields(self):
        ev = {"seq": 7, "time": "t", "type": "x", "big": list(range(10000)), "small": 1}
        line = bounded_event_json(ev)
        self.assertLess(len(line), EVENT_MAX_BYTES)
        out = json.loads(line)
        self.assertEqual((out["seq"], out["time"], out["type"], out["small"]), (7, "t", "x", 1))
        self.assertEqual(out["truncated"], ["big"])
        self.assertRegex(out["big"], r"^\[runctl: a value of \d+ bytes was dropped")
        many = {"seq": 8, "time": "t", "type": "x", "pad": "p" * 600}
        many.update(("f%04d" % i, "v" * 20) for i in range(700))
        out = json.loads(bounded_event_json(many))
        self.assertLess(len(json.dumps(out, separators=(",", ":"))), EVENT_MAX_BYTES)
        self.assertEqual(out["seq"], 8)
        self.assertTrue(out["truncated"])


class EventLogTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="runctl-agent-events-")
        self.addCleanup(shutil.rmtree, self.dir)
        self.path = os.path.join(self.dir, "events.jsonl")
        self.log = os.path.join(self.dir, "train.log")

    def read(self):
        with open(self.path) as f:
            return [json.loads(line) for line in f]

    def test_seq_log_offset_redaction_and_reserved_fields(self):
        with open(self.log, "w") as f:
            f.write("12345")
        log = EventLog(self.path, self.log, redact=lambda s: s.replace("hunter2", "***"))
        log.emit("phase", phase="setup", seq=99, type="nope", message="pw hunter2")
        log.emit("exit", exitCode=0)
        evs = self.read()
        self.assertEqual([e["seq"] for e in evs], [1, 2])
        self.assertEqual([e["type"] for e in evs], ["phase", "exit"])
        self.assertEqual(evs[0]["logOffset"], 5)
        self.assertEqual(evs[0]["message"], "pw ***")
        self.assertEqual(oct(os.stat(self.path).st_mode & 0o777), "0o600")

    def test_a_reopened_log_continues_the_numbering(self):
        EventLog(self.path).emit("a")
        EventLog(self.path).emit("b")
        self.assertEqual([(e["seq"], e["type"]) for e in self.read()], [(1, "a"), (2, "b")])
        self.assertNotIn("logOffset", self.read()[0])

    def test_every_line_is_bounded(self):
        EventLog(self.path).emit("error", message="x" * 100000, outputTail="y" * 100000)
        with open(self.path, "rb") as f:
            line = f.read()
        self.assertTrue(line.endswith(b"\n"))
        self.assertLess(len(line), EVENT_MAX_BYTES + 1)


if __name__ == "__main__":
    unittest.main()

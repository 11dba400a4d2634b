"""progress.Progress: first report, at most one per interval, always the final 100%, never past it."""

import threading
import unittest

from runctl_agent.progress import Progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class ProgressTest(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.seen = []

    def make(self, total, name=None):
        return Progress(lambda **f: self.seen.append(f), "checkpoint", total, name, interval_s=0.25, clock=self.clock)

    def test_first_throttled_and_final(self):
        p = self.make(1000, "last.pt")
        p.add(0)
        p.add(100)  # same instant: held back
        self.clock.now = 0.1
        p.add(100)  # still within the interval
        self.clock.now = 0.3
        p.add(100)
        p.add(700)  # reaches the total: always reported
        p.finish()  # already final: nothing more
        self.assertEqual([(e["bytesDone"], e["bytesTotal"]) for e in self.seen], [(0, 1000), (300, 1000), (1000, 1000)])
        self.assertEqual({e["phase"] for e in self.seen}, {"checkpoint"})
        self.assertEqual({e["name"] for e in self.seen}, {"last.pt"})

    def test_finish_reports_the_total_and_counts_never_pass_it(self):
        p = self.make(10)
        p.add(0)
        p.add(50)  # a retried transfer counts twice: clamped
        self.assertEqual(self.seen[-1]["bytesDone"], 10)
        q = self.make(10)
        q.add(3)
        q.finish()
        self.assertEqual([e["bytesDone"] for e in self.seen[2:]], [3, 10])
        self.assertNotIn("name", self.seen[-1])

    def test_an_empty_transfer_reports_once(self):
        p = self.make(0)
        p.add(0)
        p.finish()
        self.assertEqual(self.seen, [{"phase": "checkpoint", "bytesDone": 0, "bytesTotal": 0}])

    def test_a_failed_transfer_ends_at_what_it_moved(self):
        p = self.make(100)
        p.add(0)
        self.clock.now = 1.0
        p.add(40)
        p.abandon()
        p.add(10)  # nothing after the end
        self.assertEqual([(e["bytesDone"], e["bytesTotal"]) for e in self.seen], [(0, 100), (40, 100), (40, 40)])

    def test_a_failing_emit_never_fails_the_transfer(self):
        def boom(**_f):
            raise OSError("disk full")
        Progress(boom, "output", 5).add(5)

    def test_threads_report_in_order(self):
        p = Progress(lambda **f: self.seen.append(f), "output", 8000, interval_s=0)
        workers = [threading.Thread(target=lambda: [p.add(1) for _ in range(1000)]) for _ in range(8)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        done = [e["bytesDone"] for e in self.seen]
        self.assertEqual(done, sorted(done))
        self.assertEqual(done[-1], 8000)


if __name__ == "__main__":
    unittest.main()

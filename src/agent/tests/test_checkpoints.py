"""checkpoints.CheckpointWatcher over a DirStorage in a temp folder, with a fake clock: scan, settle,
commit, generations, retention and the LATEST rule; ckpt_restore.restore_checkpoint."""

import json
import os
import shutil
import tempfile
import unittest
from unittest import mock

from runctl_agent import checkpoints
from runctl_agent.checkpoints import CheckpointWatcher, list_manifests
from runctl_agent.ckpt_restore import restore_checkpoint
from runctl_agent.progress import Progress
from runctl_agent.checkpoints import CheckpointCorrupt
from runctl_agent.storage_dir import DirStorage


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now

    def sleep(self, s):
        self.now += s


class FakeEvents:
    def __init__(self):
        self.events = []

    def emit(self, type_, **fields):
        self.events.append(dict(fields, type=type_))


class FakeSupervisor:
    def __init__(self):
        self.events = FakeEvents()
        self.progress_events = []
        self.trainer_running = True

    def progress(self, phase, total, name=None):
        return Progress(lambda **f: self.progress_events.append(f), phase, total, name, interval_s=0)

    def debug(self, _text):
        pass

    def _trainer_running(self):
        return self.trainer_running


class WatcherTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="runctl-agent-ckpt-")
        self.addCleanup(shutil.rmtree, self.root)
        self.ck = os.path.join(self.root, "ck")
        os.makedirs(self.ck)
        self.store = DirStorage(os.path.join(self.root, "store"))
        self.clock = FakeClock()
        patcher = mock.patch.object(checkpoints, "time", self.clock)
        patcher.start()
        self.addCleanup(patcher.stop)
        self.sup = FakeSupervisor()
        self.mtime = 1_700_000_000

    def watcher(self, keep=None):
        cfg = {"dir": self.ck, "settleMs": 2000, "pollMs": 500, "keep": keep}
        return CheckpointWatcher(self.sup, self.store, "run1", cfg, "hp")

    def write(self, name, data, done=False):
        """Writes a checkpoint file with a strictly increasing mtime (the watcher orders by mtime)."""
        self.mtime += 10
        path = os.path.join(self.ck, name)
        with open(path, "w") as f:
            f.write(data)
        os.utime(path, ns=(self.mtime * 10**9, self.mtime * 10**9))
        if done:
            with open(path + ".done", "w") as f:
                f.write("{}")
            os.utime(path + ".done", ns=((self.mtime + 1) * 10**9, (self.mtime + 1) * 10**9))

    def commits(self):
        return [(e["name"], e["commitSeq"]) for e in self.sup.events.events if e["type"] == "checkpoint"]

    def latest(self):
        return self.store.get_bytes("run1/LATEST")

    def test_an_entry_is_committed_only_after_it_settled(self):
        w = self.watcher()
        self.write("step-1.pt", "one")
        w.scan(final=False)
        self.assertEqual(self.commits(), [])
        self.clock.now += 1.9
        w.scan(final=False)
        self.assertEqual(self.commits(), [])
        self.clock.now += 0.2
        w.scan(final=False)
        self.assertEqual(self.commits(), [("step-1.pt", 1)])
        self.assertEqual(self.latest(), b"step-1.pt")
        m = json.loads(self.store.get_bytes("run1/checkpoints/step-1.pt/g00000001/manifest.json"))
        self.assertEqual((m["kind"], m["step"], m["seq"], m["totalBytes"], m["hyperparamsHash"]), ("file", 1, 1, 3, "hp"))
        self.assertEqual(self.store.get_bytes("run1/checkpoints/step-1.pt/g00000001/files/step-1.pt"), b"one")

    def test_a_fresh_done_marker_commits_at_once_and_temp_names_are_skipped(self):
        w = self.watcher()
        self.write("best.pt", "b", done=True)
        self.write("x.tmp", "t")
        self.write(".hidden", "h")
        w.scan(final=False)
        self.assertEqual(self.commits(), [("best.pt", 1)])

    def test_a_changing_entry_restarts_its_settle_time(self):
        w = self.watcher()
        self.write("a.pt", "1")
        w.scan(final=False)
        self.clock.now += 1.5
        self.write("a.pt", "12")
        w.scan(final=False)
        self.clock.now += 1.5
        w.scan(final=False)
        self.assertEqual(self.commits(), [])
        self.clock.now += 0.6
        w.scan(final=False)
        self.assertEqual(self.commits(), [("a.pt", 1)])

    def test_nothing_settles_while_the_trainer_is_not_running(self):
        w = self.watcher()
        self.sup.trainer_running = False
        self.write("a.pt", "1")
        w.scan(final=False)
        self.clock.now += 10
        w.scan(final=False)
        self.assertEqual(self.commits(), [])

    def test_after_a_crash_only_settled_or_marked_entries_are_committed(self):
        w = self.watcher()
        self.write("old.pt", "settled")
        w.scan(final=False)
        self.clock.now += 3
        w.scan(final=False)  # old.pt committed
        self.write("old.pt", "rewritten, half done")
        self.write("marked.pt", "m", done=True)
        w.scan(final=True, clean=False, exit_text="was killed")
        self.assertEqual(self.commits(), [("old.pt", 1), ("marked.pt", 2)])
        warnings = [e["message"] for e in self.sup.events.events if e["type"] == "warning"]
        self.assertEqual(len(warnings), 1)
        self.assertIn("checkpoint old.pt was not committed: the trainer was killed", warnings[0])
        self.assertEqual(self.latest(), b"marked.pt")

    def test_a_rewrite_is_a_new_generation_and_the_old_one_goes(self):
        w = self.watcher()
        self.write("last.pt", "v1", done=True)
        w.scan(final=False)
        self.write("last.pt", "v2", done=True)
        w.scan(final=False)
        self.assertEqual(self.commits(), [("last.pt", 1), ("last.pt", 2)])
        self.assertEqual(sorted(self.store.list("run1/checkpoints/last.pt/")),
                         ["run1/checkpoints/last.pt/g00000002/files/last.pt", "run1/checkpoints/last.pt/g00000002/manifest.json"])
        self.assertEqual([m["seq"] for m in list_manifests(self.store, "run1")], [2])

    def test_the_same_bytes_are_not_committed_again_by_a_restarted_watcher(self):
        self.write("a.pt", "same", done=True)
        self.watcher().scan(final=False)
        w2 = self.watcher()
        self.assertEqual(w2.next_seq, 2)
        os.utime(os.path.join(self.ck, "a.pt"))  # touched: new signature, same bytes
        w2.scan(final=True)
        self.assertEqual(self.commits(), [("a.pt", 1)])

    def test_retention_keeps_the_newest_and_never_what_latest_names(self):
        w = self.watcher(keep=2)
        for i in range(1, 4):
            self.write("step-%d.pt" % i, str(i), done=True)
            w.scan(final=False)
        names = sorted(m["name"] for m in list_manifests(self.store, "run1"))
        self.assertEqual(names, ["step-2.pt", "step-3.pt"])
        self.assertEqual(self.store.list("run1/checkpoints/step-1.pt/"), [])
        # An older entry committed after a newer one (it settled later): LATEST stays on the newer
        # one, and retention prunes around it.
        self.write("early.pt", "e")
        self.mtime += 100
        self.write("late.pt", "l", done=True)
        os.utime(os.path.join(self.ck, "early.pt"), ns=((self.mtime - 50) * 10**9,) * 2)
        w.scan(final=False)
        self.assertEqual(self.latest(), b"late.pt")
        self.clock.now += 3
        w.scan(final=False)
        self.assertEqual(self.commits()[-2:], [("late.pt", 4), ("early.pt", 5)])
        self.assertEqual(self.latest(), b"late.pt")
        self.assertEqual(sorted(m["name"] for m in list_manifests(self.store, "run1")), ["early.pt", "late.pt"])

    def test_a_storage_that_refuses_every_write_gives_one_warning_after_three_tries(self):
        blocker = os.path.join(self.root, "not-a-folder")
        with open(blocker, "w") as f:
            f.write("x")
        self.store = DirStorage(os.path.join(blocker, "store"))
        w = self.watcher()  # reads LATEST and the listing of a storage below a regular file
        self.write("ckpt-1", "weights", done=True)
        w.scan(final=False)
        self.assertEqual(self.commits(), [])
        (warning,) = [e["message"] for e in self.sup.events.events if e["type"] == "warning"]
        self.assertIn("checkpoint ckpt-1 was not committed after 3 tries", warning)
        w.scan(final=False)  # not retried until the entry changes
        self.assertEqual(len(self.sup.events.events), 1)

    def test_a_commit_reports_byte_progress_up_to_its_size(self):
        folder = os.path.join(self.ck, "step-7")
        os.makedirs(folder)
        for fn, size in (("a.bin", 3 << 20), ("b.bin", 5)):
            with open(os.path.join(folder, fn), "wb") as f:
                f.write(b"x" * size)
        with open(folder + ".done", "w") as f:
            f.write("{}")
        self.watcher().scan(final=True)
        self.assertEqual(self.commits(), [("step-7", 1)])
        seen = self.sup.progress_events
        self.assertEqual({(e["phase"], e["name"], e["bytesTotal"]) for e in seen}, {("checkpoint", "step-7", (3 << 20) + 5)})
        done = [e["bytesDone"] for e in seen]
        self.assertEqual(done[0], 0)
        self.assertEqual(done, sorted(done))
        self.assertEqual(done[-1], (3 << 20) + 5)
        self.assertGreater(len(done), 3)  # chunks of the copy, not only per file

    def test_a_failed_commit_ends_its_progress_at_the_bytes_moved(self):
        blocker = os.path.join(self.root, "not-a-folder")
        with open(blocker, "w") as f:
            f.write("x")
        self.store = DirStorage(os.path.join(blocker, "store"))
        w = self.watcher()
        self.write("ckpt-2", "weights", done=True)
        w.scan(final=False)
        ends = [e for e in self.sup.progress_events if e["bytesDone"] == e["bytesTotal"]]
        self.assertEqual(len(ends), 3)  # one per try, each closed
        self.assertEqual({e["bytesDone"] for e in ends}, {0})

    def test_restore_verifies_every_byte(self):
        self.write("model", "weights", done=True)
        self.watcher().scan(final=False)
        (m,) = list_manifests(self.store, "run1")
        out = os.path.join(self.root, "restored")
        self.assertEqual(restore_checkpoint(self.store, "run1", m, out), os.path.join(out, "model"))
        with open(os.path.join(out, "model")) as f:
            self.assertEqual(f.read(), "weights")
        bad = dict(m, files=[dict(m["files"][0], sha256="0" * 64)])
        with self.assertRaises(CheckpointCorrupt):
            restore_checkpoint(self.store, "run1", bad, os.path.join(self.root, "r2"))
        self.assertEqual(os.listdir(os.path.join(self.root, "r2")), [])


if __name__ == "__main__":
    unittest.main()

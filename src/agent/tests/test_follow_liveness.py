"""`follow --liveness heartbeat`: an agent on another node of a shared filesystem (a Slurm job) whose
flock the follower may not see is alive while its status.json heartbeat keeps changing."""

import json
import os
import shutil
import tempfile
import unittest

from runctl_agent.cli import parse_follow
from runctl_agent.follow import Follower


class HeartbeatLivenessTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def status(self, **st):
        with open(os.path.join(self.dir, "status.json"), "w") as f:
            json.dump(st, f)

    def test_lock_liveness_ignores_the_heartbeat(self):
        self.status(phase="training", heartbeatMs=1)
        self.assertFalse(Follower(self.dir, 0, 0).agent_alive(100.0))

    def test_alive_while_the_heartbeat_changes_gone_once_it_stops(self):
        f = Follower(self.dir, 0, 0, liveness="heartbeat")
        self.assertFalse(f.agent_alive(100.0))  # no status.json: never started here
        self.status(phase="training", heartbeatMs=1)
        self.assertTrue(f.agent_alive(100.0))
        self.assertTrue(f.agent_alive(109.0))
        self.assertFalse(f.agent_alive(110.5))  # unchanged for 10 s: gone
        self.status(phase="training", heartbeatMs=2)
        self.assertTrue(f.agent_alive(111.0))

    def test_a_finished_agent_is_not_alive(self):
        f = Follower(self.dir, 0, 0, liveness="heartbeat")
        self.status(phase="done", heartbeatMs=5)
        self.assertFalse(f.agent_alive(100.0))

    def test_parse_follow_reads_liveness(self):
        self.assertEqual(parse_follow(["d", "--liveness", "heartbeat"])[5], "heartbeat")
        self.assertEqual(parse_follow(["d"])[5], "lock")


if __name__ == "__main__":
    unittest.main()

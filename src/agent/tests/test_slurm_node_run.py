"""`node JOB_DIR ATTEMPT ADDRS` run for real, as Slurm starts it (`python3 <agent> node ...` with
SLURM_* set) but with no Slurm: a foreground process whose exit status is the trainer's, the stop
marker's words, a preemption's final commit and a requeued attempt's resume."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

# The sources (as `python3 src/agent/runctl_agent`), or a built .pyz named by RUNCTL_TEST_AGENT_PYZ.
AGENT = os.environ.get("RUNCTL_TEST_AGENT_PYZ") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runctl_agent")

# A trainer: prints what it resumed from (RUNCTL_RESUME_FROM); on SIGTERM saves the checkpoint `sigterm`
# (with its .done marker) and exits 0; mode ok exits 0, fail exits 3, wait waits (then exits 9).
TRAINER = r'''
import json, os, signal, sys, time
ck = os.environ["RUNCTL_CHECKPOINT_DIR"]
mode = sys.argv[1]
resumed = os.environ.get("RUNCTL_RESUME_FROM")
print("rank %s of %s resumed %s" % (os.environ.get("RUNCTL_NODE_RANK"), os.environ.get("RUNCTL_NUM_NODES"), resumed), flush=True)
if resumed:
    with open(os.path.join(resumed, "state.json")) as f:
        print("resumed state " + f.read(), flush=True)
def save(name, data):
    d = os.path.join(ck, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "state.json"), "w") as f:
        f.write(json.dumps(data))
    with open(d + ".done", "w") as f:
        f.write("{}")
def on_term(signum, frame):
    save("sigterm", {"saved": "on-sigterm"})
    print("saved on sigterm", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
if mode == "ok":
    sys.exit(0)
if mode == "fail":
    sys.exit(3)
print("waiting", flush=True)
for _ in range(600):
    time.sleep(0.1)
sys.exit(9)
'''


def read_events(run_dir):
    try:
        with open(os.path.join(run_dir, "events.jsonl")) as f:
            return [json.loads(line) for line in f if line.strip()]
    except OSError:
        return []


class NodeCommand(unittest.TestCase):
    """The real command as Slurm starts it (`python3 <agent> node ...`, SLURM_* set), in the foreground."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="runctl-node-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.job_dir = os.path.join(self.tmp, "job")
        self.code = os.path.join(self.job_dir, "code")
        os.makedirs(self.code)
        with open(os.path.join(self.code, "train.py"), "w") as f:
            f.write(TRAINER)
        self.store = os.path.join(self.tmp, "store")
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    def write_job(self, mode, restart_resume=None, resume=None, grace_ms=10000):
        srd = self.job_dir + "/attempts/_/node_"
        spec = {"runId": "r1", "argv": ["train.py", mode], "python": sys.executable, "workdir": self.code,
                "outputDir": srd + "/outputs",
                "checkpoints": {"dir": srd + "/checkpoints", "storage": {"kind": "dir", "path": self.store},
                                "settleMs": 60000, "pollMs": 100},
                "limits": {"graceMs": grace_ms}, "resume": resume}
        job = {"version": 1, "spec": spec, "specRunDir": srd, "nodes": None, "commitsRank": 0,
               "restartResume": restart_resume}
        with open(os.path.join(self.job_dir, "job.json"), "w") as f:
            json.dump(job, f)

    def start(self, attempt, restart=0, nodeid="0"):
        env = dict(os.environ)
        env.pop("SLURM_NODEID", None)
        if nodeid is not None:
            env["SLURM_NODEID"] = nodeid
        env["SLURM_RESTART_COUNT"] = str(restart)
        p = subprocess.Popen([sys.executable, AGENT, "node", self.job_dir, attempt, "localhost"], env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.procs.append(p)
        return p

    def finish(self, p, timeout=60):
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out.decode(), err.decode()

    def run_dir(self, attempt):
        return os.path.join(self.job_dir, "attempts", attempt, "node0")

    def wait_log(self, attempt, text, timeout=30):
        path = os.path.join(self.run_dir(attempt), "train.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(path) as f:
                    if text in f.read():
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.fail("%r never appeared in %s" % (text, path))

    def exit_event(self, attempt):
        evs = read_events(self.run_dir(attempt))
        self.assertTrue(evs, "no events")
        self.assertEqual(evs[-1]["type"], "exit", evs[-1])
        return evs[-1], evs

    def test_success_is_exit_0_and_the_run_folder_is_the_nodes(self):
        self.write_job("ok")
        p = self.start("7.0")
        rc, out, err = self.finish(p)
        self.assertEqual(rc, 0, err)
        ev, _ = self.exit_event("7.0")
        self.assertEqual((ev["status"], ev["reason"], ev["exitCode"]), ("succeeded", "exit", 0))
        with open(os.path.join(self.run_dir("7.0"), "spec.json")) as f:
            spec = json.load(f)
        self.assertEqual(spec["runDir"], self.run_dir("7.0"))
        self.assertEqual(spec["checkpoints"]["dir"], self.run_dir("7.0") + "/checkpoints")
        self.assertEqual(os.stat(self.run_dir("7.0")).st_mode & 0o777, 0o700)
        with open(os.path.join(self.run_dir("7.0"), "agent.pid")) as f:
            self.assertEqual(int(f.read()), p.pid, "the node process itself supervised the run (no daemon)")
        with open(os.path.join(self.run_dir("7.0"), "train.log")) as f:
            self.assertIn("rank 0 of 1 resumed None", f.read())

    def test_a_failing_trainer_makes_the_node_exit_with_its_code(self):
        self.write_job("fail")
        rc, _, err = self.finish(self.start("7.0"))
        self.assertEqual(rc, 3, err)
        ev, _ = self.exit_event("7.0")
        self.assertEqual((ev["status"], ev["reason"], ev["exitCode"]), ("failed", "exit", 3))

    def test_usage_errors(self):
        self.write_job("ok")
        rc, out, _ = self.finish(self.start("7.0", nodeid=None))
        self.assertEqual(rc, 2)
        self.assertIn("SLURM_NODEID is not set", out)
        rc, out, _ = self.finish(self.start("7/0"))
        self.assertEqual(rc, 2)
        self.assertIn("ATTEMPT must be a plain name", out)
        self.assertFalse(os.path.exists(os.path.join(self.job_dir, "attempts")), "nothing made before validation")

    def test_sigterm_with_the_cancel_marker_cancels(self):
        self.write_job("wait")
        p = self.start("7.0")
        self.wait_log("7.0", "waiting")
        with open(os.path.join(self.job_dir, "attempts", "7.0", "stop"), "w") as f:
            f.write("cancel\n")
        p.send_signal(signal.SIGTERM)
        rc, _, err = self.finish(p)
        ev, evs = self.exit_event("7.0")
        self.assertEqual((ev["status"], ev["reason"]), ("canceled", "cancel"), err)
        self.assertEqual(rc, 0)  # the trainer saved and exited 0 on its SIGTERM
        self.assertIn({"signal": "SIGTERM", "reason": "cancel"},
                      [{"signal": e["signal"], "reason": e["reason"]} for e in evs if e["type"] == "signal"])

    def test_sigterm_with_the_time_limit_marker_fails_max_duration(self):
        self.write_job("wait")
        p = self.start("7.0")
        self.wait_log("7.0", "waiting")
        with open(os.path.join(self.job_dir, "attempts", "7.0", "stop"), "w") as f:
            f.write("time-limit")
        p.send_signal(signal.SIGTERM)
        self.finish(p)
        ev, _ = self.exit_event("7.0")
        self.assertEqual((ev["status"], ev["reason"]), ("failed", "max-duration"))

    def test_kill_marker_kills_the_trainer(self):
        self.write_job("wait")
        p = self.start("7.0")
        self.wait_log("7.0", "waiting")
        with open(os.path.join(self.job_dir, "attempts", "7.0", "stop"), "w") as f:
            f.write("kill")
        p.send_signal(signal.SIGINT)
        rc, _, _ = self.finish(p)
        ev, _ = self.exit_event("7.0")
        self.assertEqual((ev["status"], ev["reason"], ev["signal"]), ("canceled", "kill", "SIGKILL"))
        self.assertEqual(rc, 128 + signal.SIGKILL)

    def test_preemption_commits_and_the_requeued_job_resumes_from_it(self):
        rr = {"storage": {"kind": "dir", "path": self.store}, "runId": "r1", "name": None}
        self.write_job("wait", restart_resume=rr)
        p = self.start("7.0")
        self.wait_log("7.0", "waiting")
        p.send_signal(signal.SIGTERM)  # no marker: Slurm preempted (or requeued) the job
        rc, _, err = self.finish(p)
        ev, evs = self.exit_event("7.0")
        self.assertEqual((ev["status"], ev["reason"]), ("interrupted", "preempted"), err)
        self.assertEqual(rc, 0)
        commits = [e for e in evs if e["type"] == "checkpoint"]
        self.assertEqual([c["name"] for c in commits], ["sigterm"], evs)
        self.assertTrue(os.path.isfile(os.path.join(self.store, "r1", "LATEST")))

        # The requeued job (restart 1, a new attempt folder) restores it.
        self.write_job("ok", restart_resume=rr)
        rc, _, err = self.finish(self.start("7.1", restart=1))
        self.assertEqual(rc, 0, err)
        ev, evs = self.exit_event("7.1")
        self.assertEqual(ev["status"], "succeeded")
        restored = [e for e in evs if e["type"] == "checkpoint-restored"]
        self.assertEqual([(r["name"], r["fromRunId"]) for r in restored], [("sigterm", "r1")])
        with open(os.path.join(self.run_dir("7.1"), "train.log")) as f:
            self.assertIn('resumed state {"saved": "on-sigterm"}', f.read())

    def test_a_restart_with_nothing_committed_starts_from_the_beginning(self):
        rr = {"storage": {"kind": "dir", "path": self.store}, "runId": "r1", "name": None}
        self.write_job("ok", restart_resume=rr)
        rc, _, err = self.finish(self.start("7.1", restart=1))
        self.assertEqual(rc, 0, err)
        ev, evs = self.exit_event("7.1")
        self.assertEqual(ev["status"], "succeeded", evs)
        self.assertEqual([e for e in evs if e["type"] == "checkpoint-restored"], [])
        with open(os.path.join(self.run_dir("7.1"), "train.log")) as f:
            log = f.read()
        self.assertIn("no checkpoint of run r1 yet: starting from the beginning", log)
        self.assertIn("resumed None", log)

    def test_a_restart_with_nothing_committed_falls_back_to_the_original_resume(self):
        # An earlier run r0 committed a checkpoint (made by a run of its own).
        rr = {"storage": {"kind": "dir", "path": self.store}, "runId": "r1", "name": None}
        self.write_job("wait")
        with open(os.path.join(self.job_dir, "job.json")) as f:
            job = json.load(f)
        job["spec"]["runId"] = "r0"
        with open(os.path.join(self.job_dir, "job.json"), "w") as f:
            json.dump(job, f)
        p = self.start("6.0")
        self.wait_log("6.0", "waiting")
        p.send_signal(signal.SIGTERM)
        self.finish(p)
        self.assertTrue(os.path.isfile(os.path.join(self.store, "r0", "LATEST")))
        # r1 resumes from r0 on its first attempt; requeued before committing anything, again from r0.
        self.write_job("ok", restart_resume=rr, resume={"storage": {"kind": "dir", "path": self.store}, "runId": "r0"})
        rc, _, err = self.finish(self.start("7.1", restart=1))
        self.assertEqual(rc, 0, err)
        ev, evs = self.exit_event("7.1")
        restored = [e for e in evs if e["type"] == "checkpoint-restored"]
        self.assertEqual([(r["name"], r["fromRunId"]) for r in restored], [("sigterm", "r0")], evs)

    def test_only_corrupt_checkpoints_still_fail(self):
        rr = {"storage": {"kind": "dir", "path": self.store}, "runId": "r1", "name": None}
        self.write_job("wait", restart_resume=rr)
        p = self.start("7.0")
        self.wait_log("7.0", "waiting")
        p.send_signal(signal.SIGTERM)
        self.finish(p)
        for dirpath, _dirs, files in os.walk(os.path.join(self.store, "r1")):
            for fn in files:
                if fn == "state.json":
                    with open(os.path.join(dirpath, fn), "w") as f:
                        f.write("tampered")
        self.write_job("ok", restart_resume=rr)
        rc, _, _ = self.finish(self.start("7.1", restart=1))
        self.assertEqual(rc, 1)
        ev, evs = self.exit_event("7.1")
        self.assertEqual((ev["status"], ev["reason"]), ("failed", "resume"))
        self.assertIn("CHECKPOINT_CORRUPT", [e.get("code") for e in evs if e["type"] == "error"])


if __name__ == "__main__":
    unittest.main()

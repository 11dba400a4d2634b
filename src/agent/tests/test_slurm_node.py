"""`node JOB_DIR ATTEMPT ADDRS` (a Slurm job step): the spec of each node, the stop marker's words and
resume `ifAny`/`orElse` validation. Whole runs of the command: test_slurm_node_run.py."""

import json
import os
import shutil
import tempfile
import unittest

from runctl_agent.constants import UsageError
from runctl_agent.slurm_node import node_spec, rebase_path, rebase_spec
from runctl_agent.spec import normalize_spec
from runctl_agent.supervisor import read_stop_marker

JOB = "/shared/jobs/j1"
SRD = JOB + "/attempts/_/node_"


def job(**over):
    j = {"version": 1,
         "spec": {"runId": "r1", "argv": ["train.py"], "workdir": "/shared/jobs/j1/code",
                  "outputDir": SRD + "/outputs", "checkpoints": {"dir": SRD + "/checkpoints",
                                                                 "storage": {"kind": "dir", "path": "/shared/ckpt"}}},
         "specRunDir": SRD, "nodes": None, "commitsRank": 0, "restartResume": None}
    j.update(over)
    return j


NODES2 = {"count": 2, "procsPerNode": 1, "masterPort": 29511, "launcher": "none"}


class Rebase(unittest.TestCase):
    def test_paths(self):
        self.assertEqual(rebase_path(SRD, SRD, "/n/node0"), "/n/node0")
        self.assertEqual(rebase_path(SRD + "/", SRD, "/n/node0"), "/n/node0/")
        self.assertEqual(rebase_path(SRD + "/ck/a", SRD, "/n/node0"), "/n/node0/ck/a")
        self.assertEqual(rebase_path(SRD + "x/ck", SRD, "/n/node0"), SRD + "x/ck")  # a string prefix only
        self.assertEqual(rebase_path("/elsewhere/ck", SRD, "/n/node0"), "/elsewhere/ck")
        self.assertEqual(rebase_path("ck", SRD, "/n/node0"), "ck")
        self.assertIsNone(rebase_path(None, SRD, "/n/node0"))

    def test_spec(self):
        spec = {"runDir": SRD, "workdir": SRD + "/code", "mirrorDir": "/shared/mirror", "outputDir": SRD + "/out",
                "dataDir": SRD + "/code/data", "checkpoints": {"dir": "/home/u/my-ckpts", "keep": 2},
                "setup": {"venvRoot": "/shared/venvs"},
                "data": [{"source": {"kind": "dir", "path": SRD + "/src"}, "to": SRD + "/code/data"},
                         {"source": {"kind": "dir", "path": "/d"}, "to": "rel/data"}]}
        before = json.dumps(spec, sort_keys=True)
        got = rebase_spec(spec, SRD, "/n/node1")
        self.assertEqual(json.dumps(spec, sort_keys=True), before, "the input is not changed")
        self.assertEqual(got["runDir"], "/n/node1")
        self.assertEqual(got["workdir"], "/n/node1/code")
        self.assertEqual(got["mirrorDir"], "/shared/mirror")
        self.assertEqual(got["outputDir"], "/n/node1/out")
        self.assertEqual(got["dataDir"], "/n/node1/code/data")
        self.assertEqual(got["checkpoints"], {"dir": "/home/u/my-ckpts", "keep": 2})
        self.assertEqual(got["setup"], {"venvRoot": "/shared/venvs"})
        self.assertEqual(got["data"][0], {"source": {"kind": "dir", "path": SRD + "/src"}, "to": "/n/node1/code/data"})
        self.assertEqual(got["data"][1]["to"], "rel/data")


class NodeSpec(unittest.TestCase):
    def test_one_node(self):
        run_dir, spec = node_spec(job(), JOB, "7.0", "host-a", 0, 0)
        self.assertEqual(run_dir, JOB + "/attempts/7.0/node0")
        self.assertEqual(spec["runDir"], run_dir)
        self.assertIsNone(spec["nodes"])
        self.assertEqual(spec["checkpoints"]["dir"], run_dir + "/checkpoints")
        self.assertEqual(spec["outputDir"], run_dir + "/outputs")
        self.assertEqual(spec["workdir"], "/shared/jobs/j1/code")
        self.assertEqual(spec["checkpoints"]["storage"], {"kind": "dir", "path": "/shared/ckpt"})
        self.assertEqual(normalize_spec(spec, run_dir)["runId"], "r1")

    def test_two_nodes_and_commits_rank(self):
        j = job(nodes=NODES2, commitsRank=0)
        _, s0 = node_spec(j, JOB, "7.0", "a,b", 0, 0)
        run_dir, s1 = node_spec(j, JOB, "7.0", "a,b", 1, 0)
        self.assertEqual(run_dir, JOB + "/attempts/7.0/node1")
        want = {"rank": 1, "count": 2, "procsPerNode": 1, "masterAddr": "a", "masterPort": 29511, "addrs": ["a", "b"],
                "launcher": "none"}
        self.assertEqual(s1["nodes"], want)
        self.assertEqual(s0["nodes"]["rank"], 0)
        self.assertEqual(s0["checkpoints"]["storage"], {"kind": "dir", "path": "/shared/ckpt"})
        self.assertIsNone(s1["checkpoints"]["storage"])
        self.assertEqual(s1["checkpoints"]["dir"], run_dir + "/checkpoints")
        _, s0 = node_spec(job(nodes=NODES2, commitsRank=1), JOB, "7.0", "a,b", 0, 0)
        self.assertIsNone(s0["checkpoints"]["storage"])

    def test_restart_resume(self):
        rr = {"storage": {"kind": "dir", "path": "/shared/ckpt"}, "runId": "r1", "name": None}
        orig = {"storage": {"kind": "dir", "path": "/old"}, "runId": "r0", "name": "best"}
        j = job(restartResume=rr)
        j["spec"]["resume"] = orig
        _, first = node_spec(j, JOB, "7.0", "a", 0, 0)
        self.assertEqual(first["resume"], orig)
        _, again = node_spec(j, JOB, "7.1", "a", 0, 1)
        self.assertEqual(again["resume"], dict(rr, ifAny=True, orElse=orig))
        self.assertEqual(normalize_spec(again, JOB)["resume"]["orElse"]["runId"], "r0")
        del j["spec"]["resume"]
        _, again = node_spec(j, JOB, "7.1", "a", 0, 1)
        self.assertEqual(again["resume"], dict(rr, ifAny=True, orElse=None))
        _, none = node_spec(job(), JOB, "7.1", "a", 0, 1)  # no restartResume: nothing changes
        self.assertNotIn("resume", none)

    CASES = [
        ("attempt with a slash", dict(attempt="7/0"), "ATTEMPT must be a plain name"),
        ("attempt with a dot first", dict(attempt=".."), "ATTEMPT must be a plain name"),
        ("empty attempt", dict(attempt=""), "ATTEMPT must be a plain name"),
        ("no addrs", dict(addrs=""), "ADDRS must be a comma-separated list"),
        ("bad addr", dict(addrs="a,-oX"), "ADDRS: entry 1 must be an IP address or a host name, got '-oX'"),
        ("empty addr", dict(addrs="a,", job=job(nodes=NODES2)), "ADDRS: entry 1 must be"),
        ("one node, two addrs", dict(addrs="a,b"), "job.json has nodes null (one node), but ADDRS lists 2"),
        ("one node, rank 1", dict(rank=1), "job.json has nodes null (one node), but SLURM_NODEID is 1"),
        ("addrs != count", dict(addrs="a", job=job(nodes=NODES2)), "ADDRS lists 1 host(s), job.json's nodes.count is 2"),
        ("rank >= count", dict(addrs="a,b", rank=2, job=job(nodes=NODES2)), "SLURM_NODEID 2 is not below nodes.count 2"),
        ("version", dict(job=job(version=2)), "version must be 1"),
        ("unknown field", dict(job=job(extra=1)), "job.json: unknown field extra"),
        ("no runId", dict(job=job(spec={"argv": ["t.py"]})), "spec.runId must be set"),
        ("secrets", dict(job=job(spec={"runId": "r", "argv": ["t.py"], "secrets": {}})), "spec.secrets is not allowed"),
        ("relative specRunDir", dict(job=job(specRunDir="x/y")), "specRunDir must be an absolute path"),
        ("nodes field", dict(job=job(nodes={"count": 2, "rank": 1})), "nodes: unknown field rank"),
        ("nodes count", dict(job=job(nodes={"count": 0})), "nodes.count must be an integer >= 1"),
        ("commitsRank", dict(job=job(commitsRank=-1)), "commitsRank must be an integer >= 0"),
        ("restartResume", dict(job=job(restartResume={"runId": "r"})), "restartResume must be null or {storage, runId, name}"),
        ("bad spec", dict(job=job(spec={"runId": "r1", "argv": []})), "spec.argv must be a non-empty list"),
        ("bad port", dict(addrs="a,b", job=job(nodes=dict(NODES2, masterPort=0))), "spec.nodes.masterPort must be"),
    ]

    def test_rejections(self):
        for label, over, message in self.CASES:
            with self.subTest(label):
                args = dict(job=job(), attempt="7.0", addrs="a", rank=0)
                args.update(over)
                with self.assertRaises(UsageError) as cm:
                    node_spec(args["job"], JOB, args["attempt"], args["addrs"], args["rank"], 0)
                self.assertIn(message, str(cm.exception))


class StopMarker(unittest.TestCase):
    def test_words(self):
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        path = os.path.join(d, "stop")
        self.assertEqual(read_stop_marker(path), "preempted")  # no marker: Slurm preempted or requeued it
        for text, want in (("cancel", "cancel"), ("kill\n", "kill"), (" time-limit \n", "max-duration"),
                           ("", "preempted"), ("requeue", "preempted"), ("CANCEL", "preempted")):
            with open(path, "w") as f:
                f.write(text)
            self.assertEqual(read_stop_marker(path), want, text)


class ResumeSpec(unittest.TestCase):
    def test_if_any_and_or_else(self):
        st = {"kind": "dir", "path": "/c"}
        got = normalize_spec({"argv": ["t"], "resume": {"storage": st, "runId": "r"}}, "/x/r")["resume"]
        self.assertEqual(got, {"storage": st, "runId": "r", "ifAny": False, "orElse": None})
        got = normalize_spec({"argv": ["t"], "resume": {"storage": st, "runId": "r", "ifAny": True,
                                                        "orElse": {"storage": st, "runId": "q"}}}, "/x/r")["resume"]
        self.assertEqual(got["orElse"], {"storage": st, "runId": "q", "ifAny": False, "orElse": None})
        for label, resume, message in (
            ("ifAny not bool", {"storage": st, "runId": "r", "ifAny": 1}, "spec.resume.ifAny must be true or false"),
            ("orElse without ifAny", {"storage": st, "runId": "r", "orElse": {"storage": st, "runId": "q"}},
             "spec.resume.orElse needs ifAny: true"),
            ("orElse without runId", {"storage": st, "runId": "r", "ifAny": True, "orElse": {}},
             "spec.resume.orElse needs storage and runId"),
            ("nested orElse", {"storage": st, "runId": "r", "ifAny": True, "orElse": {
                "storage": st, "runId": "q", "ifAny": True, "orElse": {"storage": st, "runId": "p"}}},
             "spec.resume.orElse.orElse must be null"),
        ):
            with self.subTest(label):
                with self.assertRaises(UsageError) as cm:
                    normalize_spec({"argv": ["t"], "resume": resume}, "/x/r")
                self.assertIn(message, str(cm.exception))


if __name__ == "__main__":
    unittest.main()

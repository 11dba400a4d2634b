"""container_spec and container: spec tables, path mapping, the `run` command line, and the checks
made before anything starts, against a fake `docker` on PATH (a script that logs its calls)."""

import json
import os
import shutil
import signal
import sys
import tempfile
import unittest

from runctl_agent.constants import PhaseFailed, UsageError
from runctl_agent.container import ContainerRuntime, remove_run_containers
from runctl_agent.container_spec import container_name, normalize_container

FAKE_DOCKER = r'''#!%(python)s
import json, os, sys
root = os.environ["FAKE_DOCKER_ROOT"]
args = sys.argv[1:]
with open(os.path.join(root, "calls.jsonl"), "a") as f:
    f.write(json.dumps({"argv": args, "host": os.environ.get("DOCKER_HOST"), "secret": os.environ.get("MY_SECRET")}) + "\n")
mode = os.environ.get("FAKE_DOCKER_MODE", "")
if args[:1] == ["version"]:
    if mode == "nodaemon":
        sys.stderr.write("Cannot connect to the Docker daemon at unix:///nope.sock. Is the docker daemon running?\n")
        sys.exit(1)
    print("20.10.24"); sys.exit(0)
if args[:1] == ["info"]:
    print(json.dumps({"runc": {}, "nvidia": {}} if mode == "nvidia" else {"runc": {}, "io.containerd.runc.v2": {}})); sys.exit(0)
if args[:2] == ["image", "inspect"]:
    if args[-1] == "absent:1":
        sys.stderr.write("Error: No such image: absent:1\n"); sys.exit(1)
    print("sha256:abc")
    print(json.dumps(["PATH=/opt/conda/bin:/usr/bin", "LANG=C.UTF-8"])); sys.exit(0)
if args[:1] == ["pull"]:
    sys.stderr.write("Error response from daemon: pull access denied for absent, repository does not exist\n"); sys.exit(1)
if args[:1] == ["ps"]:
    print("c1\nc2"); sys.exit(0)
sys.exit(0)
'''


def cfg(**over):
    base = {"image": "python:3.11-slim"}
    base.update(over)
    return normalize_container(base)


class SpecTable(unittest.TestCase):
    def test_defaults(self):
        c = cfg()
        self.assertEqual((c["runtime"], c["pull"], c["gpus"], c["network"], c["mounts"], c["env"]), ("docker", "missing", "auto", "host", [], {}))
        self.assertIsNone(normalize_container(None))

    def test_rejects(self):
        bad = [
            {"image": ""}, {"image": "-rm"}, {"image": "a b"}, {"image": "x", "runtime": "lxc"}, {"image": "x", "pull": "sometimes"},
            {"image": "x", "gpus": 0}, {"image": "x", "gpus": True}, {"image": "x", "gpus": "some"}, {"image": "x", "network": "--privileged"},
            {"image": "x", "shmSize": "8 GB"}, {"image": "x", "user": "root;id"}, {"image": "x", "env": {"1X": "a"}},
            {"image": "x", "mounts": [{"source": "rel", "target": "/d"}]}, {"image": "x", "mounts": [{"source": "/a,b", "target": "/d"}]},
            {"image": "x", "mounts": [{"source": "/a/../etc", "target": "/d"}]}, {"image": "x", "mounts": [{"source": "/a", "target": "/runctl/code"}]},
            {"image": "x", "mounts": [{"source": "/a", "target": "/"}]}, {"image": "x", "mounts": [{"source": "/a", "target": "/d"}, {"source": "/b", "target": "/d/"}]},
        ]
        for spec in bad:
            with self.assertRaises(UsageError, msg=json.dumps(spec)):
                normalize_container(spec)

    def test_names_are_valid_and_unique_per_step(self):
        a = container_name("my run/ä", "0123456789abcdef", 1)
        self.assertRegex(a, r"^[A-Za-z0-9][A-Za-z0-9_.-]+$")
        self.assertNotEqual(a, container_name("my run/ä", "0123456789abcdef", 2))


class Runtime(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.bin = os.path.join(self.dir, "bin")
        os.mkdir(self.bin)
        fake = os.path.join(self.bin, "docker")
        with open(fake, "w") as f:
            f.write(FAKE_DOCKER % {"python": sys.executable})
        os.chmod(fake, 0o755)
        self.env = {k: os.environ.get(k) for k in ("PATH", "FAKE_DOCKER_ROOT", "FAKE_DOCKER_MODE", "MY_SECRET")}
        os.environ["PATH"] = self.bin + os.pathsep + os.environ.get("PATH", "")
        os.environ["FAKE_DOCKER_ROOT"] = self.dir
        os.environ.pop("FAKE_DOCKER_MODE", None)

    def tearDown(self):
        for k, v in self.env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(self.dir, ignore_errors=True)

    def calls(self):
        with open(os.path.join(self.dir, "calls.jsonl")) as f:
            return [json.loads(line) for line in f]

    def test_path_mapping_takes_the_deepest_mount(self):
        rt = ContainerRuntime(cfg(), "r1", "tok" * 8)
        rt.add_mount("/runs/r1/code", "/runctl/code")
        rt.add_mount("/runs/r1/code/ckpt", "/runctl/checkpoints")
        self.assertEqual(rt.path("/runs/r1/code/train.py"), "/runctl/code/train.py")
        self.assertEqual(rt.path("/runs/r1/code/ckpt/step-1"), "/runctl/checkpoints/step-1")
        self.assertEqual(rt.path("/runs/r1/code"), "/runctl/code")
        self.assertEqual(rt.path("/runs/r1/codex/a"), "/runs/r1/codex/a")

    def test_run_argv_keeps_values_off_the_command_line(self):
        c = cfg(mounts=[{"source": "/mnt/vol", "target": "/data", "readOnly": True}], shmSize="2g", host="unix:///s.sock", network="none")
        rt = ContainerRuntime(c, "r1", "f" * 32)
        rt.add_mount("/runs/r1/code", "/runctl/code")
        for m in c["mounts"]:
            rt.add_mount(m["source"], m["target"], m["readOnly"])
        name, argv = rt.run_argv(["python3", "-u", "train.py", "--lr=0.1"], "/runctl/code", ["MY_SECRET", "RUNCTL_RUN_ID"])
        self.assertEqual(argv[-5:], ["python:3.11-slim", "python3", "-u", "train.py", "--lr=0.1"])
        for flag in ("--rm", "--init", "--pull=never"):
            self.assertIn(flag, argv)
        self.assertIn("type=bind,source=/mnt/vol,target=/data,readonly", argv)
        self.assertEqual(argv[argv.index("--network") + 1], "none")
        self.assertEqual(argv[argv.index("--shm-size") + 1], "2g")
        self.assertIn("runctl.token=" + "f" * 32, argv)
        self.assertEqual(argv[argv.index("--name") + 1], name)
        i = argv.index("MY_SECRET")
        self.assertEqual(argv[i - 1], "-e")  # the name only: the CLI reads the value from its environment
        if os.getuid() != 0:
            self.assertEqual(argv[argv.index("--user") + 1], "%d:%d" % (os.getuid(), os.getgid()))

    def test_check_reports_an_unreachable_daemon(self):
        os.environ["FAKE_DOCKER_MODE"] = "nodaemon"
        with self.assertRaises(PhaseFailed) as cm:
            ContainerRuntime(cfg(host="unix:///nope.sock"), "r1", "t" * 32).check()
        self.assertEqual(cm.exception.code, "CONTAINER_RUNTIME_UNAVAILABLE")
        self.assertIn("Cannot connect", cm.exception.message)
        self.assertEqual(self.calls()[0]["host"], "unix:///nope.sock")

    def test_missing_runtime(self):
        rt = ContainerRuntime(cfg(runtime="podman"), "r1", "t" * 32)
        rt.cli = None
        with self.assertRaises(PhaseFailed) as cm:
            rt.check()
        self.assertEqual(cm.exception.code, "CONTAINER_RUNTIME_UNAVAILABLE")

    def test_gpus(self):
        has_gpu = os.path.exists("/dev/nvidiactl")
        rt = ContainerRuntime(cfg(gpus="auto"), "r1", "t" * 32)
        rt.check()
        self.assertEqual(rt.gpu_args, ["--gpus", "all"] if has_gpu else [])
        if not has_gpu:
            with self.assertRaises(PhaseFailed) as cm:
                ContainerRuntime(cfg(gpus="all"), "r1", "t" * 32).check()
            self.assertEqual(cm.exception.code, "GPU_UNAVAILABLE")
            with self.assertRaises(PhaseFailed):
                ContainerRuntime(cfg(gpus=2), "r1", "t" * 32).check()
        self.assertEqual(ContainerRuntime(cfg(gpus="none"), "r1", "t" * 32)._gpu_args(), [])

    def test_gpu_problem_names_the_runtimes(self):
        rt = ContainerRuntime(cfg(), "r1", "t" * 32)
        orig = os.path.exists
        try:
            os.path.exists = lambda p: True if p == "/dev/nvidiactl" else orig(p)
            problem = rt._gpu_problem()
            if shutil.which("nvidia-container-runtime-hook") is None:
                self.assertIn("no NVIDIA container runtime (runtimes: io.containerd.runc.v2, runc)", problem)
            os.environ["FAKE_DOCKER_MODE"] = "nvidia"
            self.assertIsNone(rt._gpu_problem())
            self.assertEqual(rt._gpu_args(), ["--gpus", "all"])
        finally:
            os.path.exists = orig

    def test_image_pull_policy(self):
        log = os.open(os.path.join(self.dir, "log"), os.O_RDWR | os.O_CREAT)
        notes = []
        def tail(start):
            with open(os.path.join(self.dir, "log")) as f:
                return f.read()[start:]
        rt = ContainerRuntime(cfg(image="absent:1", pull="never"), "r1", "t" * 32)
        with self.assertRaises(PhaseFailed) as cm:
            rt.ensure_image(log, notes.append, lambda: None, tail)
        self.assertEqual(cm.exception.code, "IMAGE_UNAVAILABLE")
        self.assertIn('pull is "never"', cm.exception.message)
        rt = ContainerRuntime(cfg(image="absent:1"), "r1", "t" * 32)
        with self.assertRaises(PhaseFailed) as cm:
            rt.ensure_image(log, notes.append, lambda: None, tail)
        self.assertIn("pulling it failed", cm.exception.message)
        self.assertIn("pull access denied", cm.exception.message)
        rt = ContainerRuntime(cfg(image="present:1"), "r1", "t" * 32)
        rt.ensure_image(log, notes.append, lambda: None, tail)
        self.assertEqual((rt.image_id, rt.image_path), ("sha256:abc", "/opt/conda/bin:/usr/bin"))
        self.assertFalse(any(c["argv"][0] == "pull" and c["argv"][-1] == "present:1" for c in self.calls()))
        os.close(log)

    def test_remove_by_label(self):
        info = ContainerRuntime(cfg(host="unix:///x.sock"), "r1", "t" * 32).info()
        self.assertEqual(remove_run_containers(info, "t" * 32), 2)
        calls = self.calls()
        self.assertEqual(calls[0]["argv"], ["ps", "-aq", "--filter", "label=runctl.token=" + "t" * 32])
        self.assertEqual(calls[1]["argv"], ["rm", "-f", "c1", "c2"])
        self.assertEqual(remove_run_containers(None, "t"), 0)

    def test_kill_sends_the_signal_name(self):
        rt = ContainerRuntime(cfg(), "r1", "t" * 32)
        self.assertTrue(rt.kill("runctl-r1-x-1", signal.SIGTERM))
        self.assertEqual(self.calls()[-1]["argv"], ["kill", "--signal", "SIGTERM", "runctl-r1-x-1"])


if __name__ == "__main__":
    unittest.main()

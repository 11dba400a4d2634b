"""The container runtime (docker or podman CLI) the trainer and setup steps run in.

The agent stays on the host: each step is one `docker run --rm --init` child of the agent, with the
run's folders bind-mounted at fixed paths (container_spec.py). Values of environment variables never
appear on a command line: the container gets `-e NAME` and the CLI reads the value from its own
environment. Every container carries the labels runctl.run-id and runctl.token, so whatever is left
of a run (agent killed, CLI killed) is found and removed by label (remove_run_containers)."""

import glob
import json
import os
import shutil
import signal
import subprocess
import time

from .constants import Aborted, PhaseFailed
from .container_spec import container_name
from .fsutil import signal_name

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CLI_TIMEOUT_S = 60


def cli_env(runtime, host, extra=None):
    """The CLI's environment: the agent's, the step's variables (read by `-e NAME`), the daemon address."""
    env = dict(os.environ)
    env.update(extra or {})
    if host:
        env["CONTAINER_HOST" if runtime == "podman" else "DOCKER_HOST"] = host
    return env


def remove_run_containers(info, token):
    """Removes (SIGKILL, then delete) every container labelled with the run's token. info: the
    `container` entry of supervision.json ({cli, runtime, host}). Returns how many it removed."""
    if not isinstance(info, dict) or not isinstance(info.get("cli"), str) or not token:
        return 0
    env = cli_env(info.get("runtime"), info.get("host"))
    try:
        out = subprocess.run([info["cli"], "ps", "-aq", "--filter", "label=runctl.token=%s" % token],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             env=env, timeout=CLI_TIMEOUT_S)
        ids = out.stdout.decode("ascii", "replace").split()
        if ids:
            subprocess.run([info["cli"], "rm", "-f"] + ids, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=env, timeout=CLI_TIMEOUT_S)
        return len(ids)
    except (OSError, subprocess.SubprocessError):
        return 0


def _tail(text, n=1500):
    text = (text or "").strip()
    return text[-n:]


class ContainerRuntime:
    """One run's view of the runtime: checks, the image, `run` command lines, signals, removal."""

    def __init__(self, cfg, run_id, token):
        self.cfg = cfg
        self.runtime = cfg["runtime"]
        self.cli = shutil.which(self.runtime)
        self.run_id = run_id
        self.token = token
        self.mounts = []  # (host path, container path, read only), run folders first, then the user's
        self.steps = 0
        self.image_id = None
        self.image_path = DEFAULT_PATH
        self.gpu_args = []

    # -- plumbing

    def info(self):
        """What supervision.json records, so a watcher or `reap` can remove the run's containers."""
        return {"cli": self.cli, "runtime": self.runtime, "host": self.cfg["host"]}

    def _run(self, args, timeout=CLI_TIMEOUT_S):
        try:
            out = subprocess.run([self.cli] + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=cli_env(self.runtime, self.cfg["host"]), timeout=timeout)
        except subprocess.TimeoutExpired:
            return 124, "", "%s %s timed out after %d s" % (self.runtime, args[0], timeout)
        except OSError as e:
            return 127, "", str(e)
        return out.returncode, out.stdout.decode("utf-8", "replace"), out.stderr.decode("utf-8", "replace")

    def add_mount(self, source, target, read_only=False):
        self.mounts.append((os.path.abspath(source), target, read_only))

    def path(self, host_path):
        """The container's path of a host path under one of the mounts (the deepest); others unchanged."""
        best = None
        for src, dst, _ in self.mounts:
            if (host_path == src or host_path.startswith(src.rstrip("/") + "/")) and (best is None or len(src) > len(best[0])):
                best = (src, dst)
        if best is None:
            return host_path
        rest = host_path[len(best[0]):].lstrip("/")
        return best[1] + ("/" + rest if rest else "")

    # -- before anything runs

    def check(self):
        """The runtime answers, the user's mount sources exist, and GPUs are there if asked for.
        PhaseFailed otherwise: nothing has started yet."""
        if self.cli is None:
            raise PhaseFailed("CONTAINER_RUNTIME_UNAVAILABLE", "%s is not installed on this machine (not on PATH); "
                              ".container() needs it (or runtime: \"podman\")" % self.runtime, "setup")
        args = ["info", "--format", "{{.Host.OCIRuntime.Name}}"] if self.runtime == "podman" else ["version", "--format", "{{.Server.Version}}"]
        rc, out, err = self._run(args)
        if rc != 0:
            raise PhaseFailed("CONTAINER_RUNTIME_UNAVAILABLE", "%s cannot reach its daemon%s: %s" % (
                self.runtime, " at %s" % self.cfg["host"] if self.cfg["host"] else "", _tail(err or out, 600)), "setup")
        for m in self.cfg["mounts"]:
            if not os.path.exists(m["source"]):
                raise PhaseFailed("SETUP_FAILED", "container mount source %s does not exist on this machine" % m["source"], "setup")
        self.gpu_args = self._gpu_args()

    def _gpu_args(self):
        want = self.cfg["gpus"]
        if want == "none":
            return []
        problem = self._gpu_problem()
        if problem is None:
            if self.runtime == "podman":
                n = None if want in ("auto", "all") else want
                return ["--device", "nvidia.com/gpu=all"] if n is None else sum((["--device", "nvidia.com/gpu=%d" % i] for i in range(n)), [])
            return ["--gpus", "all" if want in ("auto", "all") else str(want)]
        if want == "auto":
            return []  # "auto": GPUs when present; a machine without them runs on CPU
        raise PhaseFailed("GPU_UNAVAILABLE", "gpus: %s was asked for, but %s; use gpus: \"auto\" to run without GPUs "
                          "where there are none" % (json.dumps(want), problem), "setup")

    def _gpu_problem(self):
        """None when GPUs can be given to containers here, else why not (Docker's --gpus fails without
        the NVIDIA runtime, and Podman silently ignores it, so this is checked before any run)."""
        if not (os.path.exists("/dev/nvidiactl") or glob.glob("/dev/nvidia[0-9]*")):
            return "this machine has no NVIDIA GPU (no /dev/nvidiactl)"
        if self.runtime == "podman":
            for path in glob.glob("/etc/cdi/*") + glob.glob("/var/run/cdi/*"):
                try:
                    with open(path, "rb") as f:
                        if b"nvidia.com/gpu" in f.read():
                            return None
                except OSError:
                    pass
            return "podman has no NVIDIA CDI spec (/etc/cdi; run `nvidia-ctk cdi generate`)"
        rc, out, _ = self._run(["info", "--format", "{{json .Runtimes}}"])
        try:
            runtimes = sorted(json.loads(out)) if rc == 0 else []
        except ValueError:
            runtimes = []
        if "nvidia" in runtimes or shutil.which("nvidia-container-runtime-hook"):
            return None
        return "docker on this machine has no NVIDIA container runtime (runtimes: %s); install the NVIDIA " \
               "container toolkit" % (", ".join(runtimes) or "unknown")

    def ensure_image(self, log_fd, log_note, check_abort, log_tail):
        """The image on the machine, pulled per `pull` (with the machine's own registry login)."""
        image, pull = self.cfg["image"], self.cfg["pull"]
        present = self._run(["image", "inspect", "--format", "{{.Id}}", image])[0] == 0
        if pull == "always" or (pull == "missing" and not present):
            log_note("%s pull %s" % (self.runtime, image))
            start = os.fstat(log_fd).st_size
            proc = subprocess.Popen([self.cli, "pull", image], stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                                    env=cli_env(self.runtime, self.cfg["host"]), start_new_session=True, close_fds=True)
            try:
                while proc.poll() is None:
                    check_abort()
                    time.sleep(0.1)
            except Aborted:
                proc.kill()
                proc.wait()
                raise
            if proc.returncode != 0:
                tail = log_tail(start) or ""
                where = "is not on this machine and pulling it" if not present else "could not be pulled again (pull: \"always\"); pulling it"
                raise PhaseFailed("IMAGE_UNAVAILABLE", "image %s %s failed (a private registry needs `%s login` on the "
                                  "machine): %s" % (image, where, self.runtime, _tail(tail, 600)), "setup", tail)
        elif not present:
            raise PhaseFailed("IMAGE_UNAVAILABLE", "image %s is not on this machine and pull is \"never\" "
                              "(load or build it there first, or allow pull: \"missing\")" % image, "setup")
        rc, out, err = self._run(["image", "inspect", "--format", "{{.Id}}\n{{json .Config.Env}}", image])
        if rc != 0:
            raise PhaseFailed("IMAGE_UNAVAILABLE", "image %s cannot be inspected: %s" % (image, _tail(err, 600)), "setup")
        first, _, rest = out.partition("\n")
        self.image_id = first.strip()
        try:
            for item in json.loads(rest.strip() or "null") or []:
                if isinstance(item, str) and item.startswith("PATH="):
                    self.image_path = item[5:]
        except ValueError:
            pass

    # -- steps

    def run_argv(self, argv, cwd, env_names):
        """(name, the CLI's argv) running argv in a new container with cwd (a container path)."""
        self.steps += 1
        name = container_name(self.run_id, self.token, self.steps)
        cfg = self.cfg
        args = [self.cli, "run", "--rm", "--init", "--pull=never", "--name", name,
                "--label", "runctl.run-id=%s" % self.run_id, "--label", "runctl.token=%s" % self.token,
                "--network", cfg["network"], "--workdir", cwd]
        if self.runtime == "docker":
            # docker-init passes a signal to the trainer's whole process group, as killpg does on a host.
            args += ["-e", "TINI_KILL_PROCESS_GROUP=1"]
        if cfg["user"]:
            args += ["--user", cfg["user"]]
        elif os.getuid() != 0:
            # Files the trainer writes stay the host user's, so the agent can read and remove them.
            args += ["--userns=keep-id"] if self.runtime == "podman" else ["--user", "%d:%d" % (os.getuid(), os.getgid())]
        if cfg["shmSize"]:
            args += ["--shm-size", cfg["shmSize"]]
        args += self.gpu_args
        for src, dst, ro in self.mounts:
            args += ["--mount", "type=bind,source=%s,target=%s%s" % (src, dst, ",readonly" if ro else "")]
        for n in sorted(env_names):
            args += ["-e", n]
        return name, args + [cfg["image"]] + list(argv)

    def kill(self, name, sig):
        """Sends sig to the container's init, which passes it on to the trainer's process group."""
        rc, _, _ = self._run(["kill", "--signal", signal_name(sig), name], timeout=20)
        return rc == 0

    def remove(self, name):
        self._run(["rm", "-f", name], timeout=30)

    def remove_all(self):
        return remove_run_containers(self.info(), self.token) if self.cli else 0


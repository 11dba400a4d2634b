"""Supervisor part: where each step runs — a child process on the host, or a container (spec.container)."""

import json
import os
import signal
import subprocess

from .children import TOKEN_ENV
from .constants import PhaseFailed
from .container import ContainerRuntime, cli_env
from .container_spec import CHECKPOINT_DIR, CODE_DIR, DATA_DIR, OUTPUT_DIR, VENV_DIR
from .nodes import node_env


class ContainerMixin:
    """Supervisor methods; they use the state set up by Supervisor.__init__ (supervisor.py)."""

    def open_container(self):
        """Before anything starts: the runtime answers, mounts exist, GPUs are there if asked for."""
        cfg = self.spec["container"]
        if cfg is None:
            return
        self.container = ContainerRuntime(cfg, self.spec["runId"], self.token)
        self.write_supervision()
        self.container.check()

    def prepare_container(self):
        """The run's folders mounted at fixed paths (docs/containers.md), then the image on the machine."""
        c = self.container
        if c is None:
            return
        spec = self.spec
        c.add_mount(spec["workdir"], CODE_DIR)
        c.add_mount(spec["checkpoints"]["dir"], CHECKPOINT_DIR)
        c.add_mount(spec["outputDir"], OUTPUT_DIR)
        if spec["dataDir"]:
            os.makedirs(spec["dataDir"], exist_ok=True)
            c.add_mount(spec["dataDir"], DATA_DIR)
        if spec["setup"]:
            os.makedirs(spec["setup"]["venvRoot"], exist_ok=True)
            c.add_mount(spec["setup"]["venvRoot"], VENV_DIR)
        for m in spec["container"]["mounts"]:
            c.add_mount(m["source"], m["target"], m["readOnly"])
        self.set_phase("setup")
        c.ensure_image(self.log_fd, self.log_note, self.check_abort, self.log_tail)

    def cpath(self, host_path):
        """A host path as the step sees it (inside the container when there is one)."""
        return self.container.path(host_path) if self.container is not None and host_path else host_path

    def container_env(self, venv):
        """A container's whole environment: nothing of the host's, only the run's (as without a
        container) and the container's own `env`."""
        spec = self.spec
        env = {"PYTHONUNBUFFERED": "1"}
        for k, v in spec["env"].items():
            if v is not None:
                env[str(k)] = v if isinstance(v, str) else json.dumps(v)
        env["RUNCTL_RUN_ID"] = spec["runId"]
        env[TOKEN_ENV] = self.token
        env["RUNCTL_CHECKPOINT_DIR"] = CHECKPOINT_DIR
        env["RUNCTL_OUTPUT_DIR"] = OUTPUT_DIR
        env["RUNCTL_HPARAMS"] = json.dumps(spec["hyperparams"], separators=(",", ":"))
        env.update(node_env(spec["nodes"], spec["env"]))
        if spec["dataDir"]:
            env["RUNCTL_DATA_DIR"] = DATA_DIR
        env.update(spec["container"]["env"])
        if venv:
            env["VIRTUAL_ENV"] = self.cpath(venv)
            env["PATH"] = self.cpath(venv) + "/bin:" + self.container.image_path
        return env

    def spawn(self, argv, cwd, env, kind):
        """Starts one step as a child in its own process group; in a container, the child is the CLI."""
        self.container_name = None
        if self.container is None:
            return subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=self.log_fd,
                                    stderr=self.log_fd, start_new_session=True, close_fds=True)
        env = env if env is not None else self.container_env(None)
        name, args = self.container.run_argv(argv, self.cpath(cwd), env.keys())
        self.container_name = name
        return subprocess.Popen(args, cwd="/", env=cli_env(self.container.runtime, self.container.cfg["host"], env),
                                stdin=subprocess.DEVNULL, stdout=self.log_fd, stderr=self.log_fd,
                                start_new_session=True, close_fds=True)

    def run_captured(self, argv, timeout):
        """Runs a short command where the steps run; (exit status, output)."""
        if self.container is None:
            out = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
            return out.returncode, out.stdout
        env = self.container_env(None)
        name, args = self.container.run_argv(argv, CODE_DIR, env.keys())
        try:
            out = subprocess.run(args, cwd="/", env=cli_env(self.container.runtime, self.container.cfg["host"], env),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        finally:
            self.container.remove(name)
        return out.returncode, out.stdout

    def signal_child(self, sig):
        """Signals the running step: its process group, or the container's init (which passes it to the
        trainer's group). SIGKILL goes to both: a killed CLI alone leaves its container running."""
        name = self.container_name if self.container is not None else None
        delivered = False
        if name is not None:
            delivered = self.container.kill(name, sig)
        if name is None or sig == signal.SIGKILL or not delivered:
            pg = self.child_pgid
            if pg:
                try:
                    os.killpg(pg, sig)
                except OSError:
                    pass

    def step_ended(self, rc):
        """After a step's child exited: its container is gone for good, and the CLI's status is read
        like a shell's (128+N: the trainer died of signal N; 125: the runtime could not run it)."""
        name, self.container_name = self.container_name, None
        if self.container is None or name is None:
            return rc
        self.container.remove(name)
        if rc == 125:
            raise PhaseFailed("CONTAINER_FAILED", "%s run could not start the container (exit 125): %s" % (
                self.container.runtime, (self.log_tail(self.step_log_start) or "").strip()[-600:]), "setup",
                self.log_tail(self.step_log_start))
        if 128 < rc < 128 + 65:
            return -(rc - 128)
        return rc

    def remove_containers(self):
        if self.container is not None:
            self.container.remove_all()

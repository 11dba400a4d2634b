"""Supervisor part: the setup phase (venv) and the data phase."""

import errno
import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import time

from .constants import Aborted, PhaseFailed, TAIL_BYTES
from .fsutil import atomic_write, canonical_json, now_iso


class SetupMixin:
    """Supervisor methods; they use the state set up by Supervisor.__init__ (supervisor.py)."""
    # -- phases

    def phase_setup(self):
        spec = self.spec
        setup = spec["setup"]
        wd = spec["workdir"]
        if not spec["mirrorDir"] and not setup:
            return
        self.set_phase("setup")
        if spec["mirrorDir"]:
            self.log_note("copy %s -> %s" % (spec["mirrorDir"], wd))
            try:
                shutil.copytree(spec["mirrorDir"], wd, symlinks=True, dirs_exist_ok=True, copy_function=self._copy_checked)
            except Aborted:
                raise
            except Exception as e:
                raise PhaseFailed("SETUP_FAILED", "copying the code from %s failed: %s" % (spec["mirrorDir"], e), "setup")
        if not setup:
            return
        self.prepare_venv(setup)
        env = self.base_env()
        for cmd in setup["commands"]:
            self.run_step(["sh", "-c", cmd], cmd, "SETUP_FAILED", "setup", wd, env)

    def _python_identity(self, python):
        try:
            rc, stdout = self.run_captured([python, "-c", "import sys; print(sys.version); print(sys.executable)"], 120)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise PhaseFailed("SETUP_FAILED", "the interpreter %r cannot be run: %s" % (python, e), "setup")
        text = stdout.decode("utf-8", "replace")
        if rc != 0:
            raise PhaseFailed("SETUP_FAILED", "the interpreter %r failed: %s" % (python, text.strip()[-500:]), "setup", text[-TAIL_BYTES:])
        lines = text.strip().splitlines()
        # In a container the path is the image's: the host cannot resolve it (the image id keys the venv).
        exe = lines[-1] if lines else ""
        return lines[0] if lines else "", exe if self.container is not None else os.path.realpath(exe)

    def prepare_venv(self, setup):
        spec = self.spec
        wd = spec["workdir"]
        python = spec["python"]
        pip = setup["pip"]
        req_rel = setup.get("requirements")
        req_path = None
        req_text = None
        if req_rel:
            req_path = req_rel if os.path.isabs(req_rel) else os.path.join(wd, req_rel)
            try:
                with open(req_path, "rb") as f:
                    req_text = f.read().decode("utf-8", "replace")
            except OSError as e:
                raise PhaseFailed("SETUP_FAILED", "requirements file %s cannot be read: %s" % (req_rel, e), "setup")
        version, executable = self._python_identity(python)
        # The executable joins the key because a venv is bound to the interpreter that made it.
        key = {
            "requirements": req_text,
            "python": version,
            "executable": executable,
            "pip": {k: pip[k] for k in ("findLinks", "noIndex", "indexUrl", "extraArgs")},
            "systemSitePackages": setup["systemSitePackages"],
        }
        if self.container is not None:
            key["image"] = self.container.image_id  # a venv is bound to the image's interpreter
        key_src = canonical_json(key)
        digest = hashlib.sha256(key_src.encode("utf-8")).hexdigest()
        root = setup["venvRoot"]
        venv = os.path.join(root, digest[:16])
        marker = os.path.join(venv, ".runctl-ready")
        t0 = time.monotonic()
        os.makedirs(root, exist_ok=True)
        lock_fd = os.open(venv + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            # Another run building the same venv holds the lock; wait for it (stay cancellable).
            waited = False
            while True:
                try:
                    fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise
                    if not waited:
                        self.log_note("waiting for another run building %s" % venv)
                        waited = True
                    self.check_abort()
                    time.sleep(0.1)
            reused = os.path.exists(marker)
            if not reused:
                ok = False
                try:
                    if os.path.lexists(venv):
                        shutil.rmtree(venv)  # a half-built venv from an attempt that died
                    argv = [python, "-m", "venv"] + (["--system-site-packages"] if setup["systemSitePackages"] else []) + [self.cpath(venv)]
                    self.run_step(argv, " ".join(argv), "SETUP_FAILED", "setup", wd, None)
                    if req_path:
                        argv = [self.cpath(os.path.join(venv, "bin", "python")), "-m", "pip", "install", "--disable-pip-version-check"]
                        if pip["noIndex"]:
                            argv.append("--no-index")
                        for link in pip["findLinks"]:
                            argv += ["--find-links", str(link)]
                        if pip["indexUrl"]:
                            argv += ["--index-url", str(pip["indexUrl"])]
                        argv += pip["extraArgs"] + ["-r", self.cpath(req_path)]
                        self.run_step(argv, "pip install -r %s" % req_rel, "SETUP_FAILED", "setup", wd, None,
                                      shown=" ".join(shlex.quote(a) for a in argv))
                    # Written last: its presence is what makes the venv reusable.
                    atomic_write(marker, (canonical_json({"key": digest, "createdAt": now_iso()}) + "\n").encode("utf-8"))
                    ok = True
                finally:
                    if not ok:
                        shutil.rmtree(venv, ignore_errors=True)
        finally:
            os.close(lock_fd)
        self.venv = venv
        self.events.emit("venv", path=venv, reused=reused, durationMs=int((time.monotonic() - t0) * 1000))
        if reused:
            self.log_note("reusing venv %s" % venv)

    def _copy_checked(self, src, dst, *args, **kwargs):
        self.check_abort()
        return shutil.copy2(src, dst)

    def phase_data(self):
        spec = self.spec
        if not spec["data"] and not spec["resume"]:
            return
        self.set_phase("data")
        for index, item in enumerate(spec["data"]):
            src_desc = item["source"]
            to = item["to"]
            if src_desc.get("kind") == "s3":
                self.download_s3(self.data_storages[index], to)
                continue
            if src_desc.get("kind") != "dir":
                raise PhaseFailed("DATA_FAILED", "data source kind %r is not supported by this agent" % (src_desc.get("kind"),), "data")
            src = src_desc.get("path")
            self.log_note("data: copy %s -> %s" % (src, to))
            try:
                if not isinstance(src, str) or not os.path.exists(src):
                    raise PhaseFailed("DATA_FAILED", "data source %s does not exist" % (src,), "data")
                if os.path.isdir(src):
                    shutil.copytree(src, to, dirs_exist_ok=True, copy_function=self._copy_checked)
                else:
                    dest = to
                    if to.endswith("/") or os.path.isdir(to):
                        dest = os.path.join(to, os.path.basename(src))
                    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
                    self.check_abort()
                    shutil.copy2(src, dest)
            except (Aborted, PhaseFailed):
                raise
            except Exception as e:
                raise PhaseFailed("DATA_FAILED", "copying data from %s to %s failed: %s" % (src, to, e), "data")
        if spec["resume"]:
            self.restore()

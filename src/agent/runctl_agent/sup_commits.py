"""Supervisor part: the training phase, output uploads and final commits."""

import os
import stat
import subprocess
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from .constants import PhaseFailed
from .fsutil import signal_name
from .nodes import trainer_argv
from .storage_dir import StorageError


class CommitsMixin:
    """Supervisor methods; they use the state set up by Supervisor.__init__ (supervisor.py)."""
    def upload_outputs(self):
        """Uploads every file below outputDir to <storage>/<runId>/outputs/ (docs: S3, outputs)."""
        st = self.out_storage
        if st is None or self.trainer_pid is None or self.stop_commits:
            return
        out_dir = self.spec["outputDir"]
        base = self.spec["runId"] + "/outputs"
        t0 = time.monotonic()
        files = []
        for dirpath, dirs, names in os.walk(out_dir):
            dirs.sort()
            for fn in sorted(names):
                full = os.path.join(dirpath, fn)
                try:
                    if not stat.S_ISREG(os.lstat(full).st_mode):
                        continue  # symlinks are not followed out of the folder
                except OSError:
                    continue
                files.append((os.path.relpath(full, out_dir).replace(os.sep, "/"), full))
        result = {"files": 0, "bytes": 0}
        failed = []
        total = 0
        for _rel, full in files:
            try:
                total += os.path.getsize(full)
            except OSError:
                pass
        progress = self.progress("output", total)
        if files:
            progress.add(0)

        def put(item):
            if self.stop_commits:
                raise StorageError("stopped")
            return st.put_file(base + "/" + item[0], item[1], on_bytes=progress.add)

        def done(f, item):
            try:
                size, _digest = f.result()
                result["files"] += 1
                result["bytes"] += size
            except Exception as e:
                failed.append((item[0], e))

        batched = False
        if len(files) > 1 and st.kind == "s3":
            try:
                batched = st.upload_tree(out_dir, base)
            except StorageError as e:
                self.debug("batch upload of the outputs failed, uploading file by file: %s" % e)
            if batched:
                result["files"] = len(files)
                result["bytes"] = sum(os.path.getsize(full) for _rel, full in files)
        if files and not batched:
            workers = ThreadPoolExecutor(max_workers=4)
            try:
                futures = {workers.submit(put, item): item for item in files}
                self._wait_futures(list(futures), lambda f: done(f, futures[f]))
            finally:
                workers.shutdown(wait=True)
        if files and failed:
            progress.abandon()
        elif files:
            progress.finish()
        if failed:
            rel, err = failed[0]
            self.events.emit("warning", message="outputs: %d of %d files were not uploaded to %s (first: %s: %s)"
                             % (len(failed), len(files), st.location(base), rel, err))
        self.events.emit("outputs", files=result["files"], bytes=result["bytes"], location=st.location(base),
                         failed=len(failed), durationMs=int((time.monotonic() - t0) * 1000))

    def phase_training(self):
        spec = self.spec
        wd = spec["workdir"]
        script = spec["argv"][0]
        script_path = script if os.path.isabs(script) else os.path.join(wd, script)
        if not os.path.isfile(script_path):
            raise PhaseFailed("SCRIPT_NOT_FOUND", "script %s not found in %s" % (script, wd), "script")
        self.check_abort()
        interp = self.cpath(os.path.join(self.venv, "bin", "python")) if self.venv else spec["python"]
        env = self.base_env()
        if self.resume_from:
            env["RUNCTL_RESUME_FROM"] = self.cpath(self.resume_from)
        if self.early_watcher is not None:
            self.watcher = self.early_watcher
            if self.restored:
                self.watcher.mark_known(*self.restored)
            self.watcher.start()
        self.set_phase("training")
        self.step_log_start = os.fstat(self.log_fd).st_size
        try:
            proc = self.spawn(trainer_argv(interp, spec["argv"], spec["nodes"]), wd, env, "trainer")
        except OSError as e:
            raise PhaseFailed("SETUP_FAILED", "the interpreter %s could not start: %s" % (interp, e), "setup")
        self.trainer_pid = proc.pid
        self.record_child(proc.pid, "trainer")
        self.write_status()
        try:
            rc = self._wait_child(proc)
            # In a container the CLI's 128+N becomes signal N, as for a trainer on the host.
            proc.returncode = rc = self.step_ended(rc)
            return rc
        finally:
            # The final checkpoint pass reads this: only a clean exit 0 vouches for entries still in flux.
            self.trainer_rc = proc.returncode
            self.trainer_done = True

    def final_commits(self):
        """The pass after the trainer ended. Only its own exit status 0 (also after a SIGTERM it handled)
        makes every entry count as finished; after a signal, a non-zero status, a kill at a deadline or
        a trainer that never ran, an entry still changing is reported and not committed."""
        rc = self.trainer_rc
        if rc == 0:
            self._flush_commits(final=True, clean=True)
            return
        if rc is None:
            text = "never ran to its end"
        elif rc < 0:
            text = "was killed by %s" % signal_name(-rc)
        else:
            text = "exited with status %d" % rc
        self._flush_commits(final=True, clean=False, exit_text=text)

    def _flush_commits(self, final, clean=True, exit_text=None):
        """Stops the watcher's thread, then one pass on this thread (final: the trainer has exited)."""
        if self.watcher is None:
            return
        self.watcher.stop(poll=self.poll_abort)

        def should_stop():
            self.poll_abort()
            return self.stop_commits

        try:
            self.watcher.scan(final=final, should_stop=should_stop, drain=True, clean=clean, exit_text=exit_text)
        except Exception as e:
            what = "final" if final else "interruption"
            self.debug("%s checkpoint pass failed:\n" % what + traceback.format_exc())
            self.events.emit("warning", message="%s checkpoint pass failed: %s" % (what, e))

"""Supervisor part: opening storages, restoring checkpoints and downloading S3 data."""

import json
import os
import secrets
import shutil
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .checkpoints import CheckpointCorrupt, CheckpointMissing, CheckpointWatcher, entry_signature, list_manifests
from .ckpt_restore import restore_checkpoint
from .constants import PhaseFailed
from .fsutil import _unlink_quiet, atomic_write, read_json_file, safe_rel, tmp_name
from .s3util import DATA_STATE_FILE, StorageUnavailable, _clean_etag, hash_file, is_single_part_etag
from .storage_dir import StorageError
from .storage_s3 import open_storage
from .sync_apply import UnsafePath, _prepare_dirs


class StorageMixin:
    """Supervisor methods; they use the state set up by Supervisor.__init__ (supervisor.py)."""
    def restore(self):
        """spec.resume; with `ifAny` and no committed checkpoint of that run at all, `orElse` (its
        storage opened now) or, without one, a note and a start from the beginning."""
        r = self.spec["resume"]
        storage = self.resume_storage
        while True:
            try:
                self._restore_one(storage, r)
                return
            except PhaseFailed as e:
                if e.code != "CHECKPOINT_NOT_FOUND" or not r.get("ifAny"):
                    raise
            if r.get("orElse") is None:
                self.log_note("no checkpoint of run %s yet: starting from the beginning" % r["runId"])
                return
            self.log_note("no checkpoint of run %s yet: resuming from run %s" % (r["runId"], r["orElse"]["runId"]))
            r = r["orElse"]
            storage = self._open(r.get("storage"), "resume storage")

    def _restore_one(self, storage, r):
        from_run = r["runId"]
        try:
            self._restore(storage, from_run, r.get("name"), self.spec["checkpoints"]["dir"])
        except StorageError as e:
            self.check_abort()
            raise PhaseFailed("STORAGE_UNREACHABLE", "the resume storage %s cannot be read: %s" % (storage.location(from_run), e), "storage")

    def _restore(self, storage, from_run, name, ckpt_dir):
        chosen = None
        path = None
        if name:
            tried = set()
            while chosen is None:
                found = list_manifests(storage, from_run, name) if safe_rel(name) == name and "/" not in name else []
                m = found[0] if found else None
                if m is None:
                    raise PhaseFailed("CHECKPOINT_NOT_FOUND", "checkpoint %s of run %s was not found in %s" % (name, from_run, storage.location(from_run)), "resume")
                if m["seq"] in tried:
                    raise PhaseFailed("CHECKPOINT_CORRUPT", "checkpoint %s is corrupt: a file its manifest lists is missing" % name, "resume")
                tried.add(m["seq"])
                self.check_abort()
                try:
                    path = restore_checkpoint(storage, from_run, m, ckpt_dir)
                    chosen = m
                except CheckpointMissing as e:
                    if storage.get_bytes(e.manifest_key) is not None:
                        raise PhaseFailed("CHECKPOINT_CORRUPT", str(e), "resume")
                    # Replaced by a newer commit of the same name (or pruned) while it downloaded: read again.
                except CheckpointCorrupt as e:
                    raise PhaseFailed("CHECKPOINT_CORRUPT", str(e), "resume")
        else:
            corrupt = []
            tried = set()  # (name, seq) already downloaded or found corrupt
            relist = True
            while relist and chosen is None:
                relist = False
                manifests = sorted(list_manifests(storage, from_run), key=lambda m: m["seq"], reverse=True)
                latest = (storage.get_bytes(from_run + "/LATEST") or b"").decode("utf-8", "replace").strip()
                manifests.sort(key=lambda m: 0 if m["name"] == latest else 1)  # stable: LATEST first, then by seq
                for m in manifests:
                    if (m["name"], m["seq"]) in tried:
                        continue
                    tried.add((m["name"], m["seq"]))
                    self.check_abort()
                    try:
                        path = restore_checkpoint(storage, from_run, m, ckpt_dir)
                        chosen = m
                        break
                    except CheckpointMissing as e:
                        if storage.get_bytes(e.manifest_key) is None:
                            # Its manifest is gone too: retention pruned it (or a newer commit of the
                            # same name replaced it) while this restore read it. Not corruption: list
                            # again and take the newest complete checkpoint there is now.
                            self.debug("checkpoint %s (seq %d) vanished during the restore; listing again" % (m["name"], m["seq"]))
                            relist = True
                            break
                        corrupt.append(m["name"])
                        self.events.emit("warning", message="%s; falling back to an older checkpoint" % e)
                    except CheckpointCorrupt as e:
                        corrupt.append(m["name"])
                        self.events.emit("warning", message="%s; falling back to an older checkpoint" % e)
            if chosen is None:
                if corrupt:
                    raise PhaseFailed("CHECKPOINT_CORRUPT", "every checkpoint of run %s failed verification: %s" % (from_run, ", ".join(corrupt)), "resume")
                raise PhaseFailed("CHECKPOINT_NOT_FOUND", "run %s has no committed checkpoint in %s" % (from_run, storage.location(from_run)), "resume")
        self.restored = (chosen["name"], entry_signature(path))
        self.resume_from = path
        self.log_note("restored checkpoint %s of run %s to %s" % (chosen["name"], from_run, path))
        self.events.emit("checkpoint-restored", name=chosen["name"], step=chosen.get("step"), path=path, fromRunId=from_run)

    # -- storages

    def _storage_interrupted(self):
        """True when a storage call should stop retrying: a kill after the trainer ended, or any stop
        request before the trainer started (the data phase). Commits during training go on."""
        if threading.current_thread() is threading.main_thread():
            self.poll_abort()
        if self.stop_commits:
            return True
        return self.trainer_pid is None and not self.trainer_done and self.abort_reason is not None

    def _open(self, desc, what):
        """Opens one storage (after setup, so tools installed by setup commands count)."""
        try:
            st = open_storage(desc, self.aws_creds, self.run_dir, self.base_env().get("PATH", os.defpath))
        except StorageUnavailable as e:
            raise PhaseFailed("STORAGE_UNREACHABLE", "%s: %s" % (what, e), "storage")
        except StorageError as e:
            raise PhaseFailed("AGENT_FAILED", "%s: %s" % (what, e), "agent")
        if st.kind == "s3":
            st.warn = lambda m: self.events.emit("warning", message=m)
            st.interrupted = self._storage_interrupted
            self.log_note("%s: %s" % (what, st.describe()))
        return st

    def open_storages(self):
        spec = self.spec
        ck = spec["checkpoints"]
        if ck["storage"] is not None:
            self.ckpt_storage = self._open(ck["storage"], "checkpoint storage")
        if spec["outputs"] is not None:
            self.out_storage = self._open(spec["outputs"]["storage"], "output storage")
        if spec["resume"] is not None:
            self.resume_storage = self._open(spec["resume"].get("storage"), "resume storage")
        for index, item in enumerate(spec["data"]):
            if item["source"].get("kind") == "s3":
                self.data_storages[index] = self._open(item["source"], "data source")
        if self.ckpt_storage is not None:
            # Lists this run's committed checkpoints now: storage that cannot be reached fails the
            # run before the data phase and training, not silently at the first commit.
            try:
                self.early_watcher = CheckpointWatcher(self, self.ckpt_storage, spec["runId"], ck, self.hp_hash)
            except StorageError as e:
                self.check_abort()
                raise PhaseFailed("STORAGE_UNREACHABLE", "the checkpoint storage %s cannot be read: %s"
                                  % (self.ckpt_storage.location(spec["runId"]), e), "storage")

    def _wait_futures(self, futures, on_done, abortable=False):
        """Waits for futures on the main thread, staying responsive to cancel/kill (abortable: a stop
        request raises Aborted); on_done(future) for each finished one (it may raise: the rest are
        then cancelled, and the running ones, which see the storage's `interrupted`, awaited)."""
        import concurrent.futures as cf
        pending = set(futures)
        try:
            while pending:
                if abortable:
                    self.check_abort()
                else:
                    self.poll_abort()
                done, pending = cf.wait(pending, timeout=0.1, return_when=cf.FIRST_COMPLETED)
                for f in done:
                    on_done(f)
        finally:
            for f in pending:
                f.cancel()
            for f in pending:
                if not f.cancelled():
                    try:
                        f.result()
                    except BaseException:
                        pass

    def download_s3(self, storage, to):
        """Downloads every object below the source's prefix to `to` (docs: S3, data)."""
        where = storage.location("")
        t0 = time.monotonic()
        self.log_note("data: download %s/ -> %s" % (where, to))
        try:
            objects = storage.list_objects("")
        except StorageError as e:
            self.check_abort()
            raise PhaseFailed("DATA_FAILED", "listing %s failed: %s" % (where, e), "data")
        plan = []
        seen = {}
        for key, size, etag in objects:
            if key.endswith("/") and size == 0:
                continue  # a "folder" marker made by consoles
            rel = safe_rel(key)
            if rel is None:
                raise PhaseFailed("DATA_FAILED", "object %s/%s would be written outside %s; refusing to download it" % (where, key, to), "data")
            if rel != key:
                raise PhaseFailed("DATA_FAILED", "object %s/%s has a key with empty or `.` parts, which has no one-to-one file name" % (where, key), "data")
            if rel == DATA_STATE_FILE or rel.startswith(".runctl-data-staging"):
                raise PhaseFailed("DATA_FAILED", "object %s/%s has a name runctl reserves in %s" % (where, key, to), "data")
            if rel in seen:
                raise PhaseFailed("DATA_FAILED", "objects %r and %r of %s map to the same file %s" % (seen[rel], key, where, rel), "data")
            seen[rel] = key
            plan.append((rel, key, size, etag))
        try:
            os.makedirs(to, exist_ok=True)
        except OSError as e:
            raise PhaseFailed("DATA_FAILED", "cannot create %s: %s" % (to, e), "data")
        state_path = os.path.join(to, DATA_STATE_FILE)
        state = read_json_file(state_path)
        if not isinstance(state, dict):
            state = {}
        todo = []
        skipped = 0
        total = 0
        for rel, key, size, etag in plan:
            total += size
            dest = os.path.join(to, *rel.split("/"))
            prev = state.get(rel)
            if isinstance(prev, dict) and etag and prev.get("size") == size and prev.get("etag") == etag:
                # ... and the local copy is still the one written then (size and mtime).
                try:
                    lst = os.lstat(dest)
                    if stat.S_ISREG(lst.st_mode) and lst.st_size == size and prev.get("mtimeNs") == str(lst.st_mtime_ns):
                        skipped += 1
                        continue
                except OSError:
                    pass
            todo.append((rel, key, size, etag))
        # Folders first, on this thread: no symlink may lead a download outside `to`.
        try:
            made = set()
            for rel, _k, _s, _e in todo:
                parts = tuple(rel.split("/")[:-1])
                if parts not in made:
                    _prepare_dirs(to, list(parts), rel)
                    made.add(parts)
                dest = os.path.join(to, rel)
                if os.path.lexists(dest) and (os.path.islink(dest) or os.path.isdir(dest)):
                    raise UnsafePath("%s is a folder or symlink in %s" % (rel, to))
        except (UnsafePath, OSError) as e:
            raise PhaseFailed("DATA_FAILED", "cannot download %s to %s: %s" % (where, to, e), "data")
        progress = {"files": 0, "bytes": 0, "saved": time.monotonic(), "noted": time.monotonic()}
        # Counted per finished file: a download is verified before it counts.
        bytes_progress = self.progress("data", sum(t[2] for t in todo), where)
        if todo:
            bytes_progress.add(0)

        def save_state(force=False):
            now = time.monotonic()
            if force or now - progress["saved"] >= 2.0:
                progress["saved"] = now
                try:
                    atomic_write(state_path, json.dumps(state, separators=(",", ":"), sort_keys=True).encode("utf-8"))
                except OSError as e:
                    self.debug("data state %s not written: %s" % (state_path, e))

        def verify(path, size, etag, etag_is_md5=True, got=None):
            if got is not None:
                got_size, md5 = got[0], got[2]
            else:
                got_size, digests = hash_file(path, ("md5",))
                md5 = digests["md5"]
            if got_size != size:
                return "size %d, listed as %d" % (got_size, size)
            if etag_is_md5 and is_single_part_etag(etag) and md5 != _clean_etag(etag):
                return "MD5 %s, ETag says %s" % (md5, _clean_etag(etag))
            return None

        def fetch(item):
            rel, key, size, etag = item
            dest = os.path.join(to, *rel.split("/"))
            problem = None
            for _attempt in range(2):
                tmp = tmp_name(dest)
                try:
                    got = storage.get_file(key, tmp, size)
                    if got is None:
                        problem = "it vanished from the bucket"
                        break
                    problem = verify(tmp, size, etag, got[3], got)
                    if problem is None:
                        os.replace(tmp, dest)
                        return item
                finally:
                    _unlink_quiet(tmp)
            raise StorageError("%s/%s failed verification: %s" % (where, key, problem))

        def finished(item):
            rel, _key, size, etag = item
            try:
                mtime = str(os.lstat(os.path.join(to, *rel.split("/"))).st_mtime_ns)
            except OSError:
                mtime = None
            state[rel] = {"size": size, "etag": etag, "mtimeNs": mtime}
            progress["files"] += 1
            progress["bytes"] += size
            bytes_progress.add(size)
            now = time.monotonic()
            if now - progress["noted"] >= 5.0:
                progress["noted"] = now
                self.log_note("data: %d/%d files, %d/%d bytes" % (progress["files"], len(todo), progress["bytes"], sum(t[2] for t in todo)))
            save_state()

        try:
            batch = todo
            if len(todo) > 1 and getattr(storage.backend, "name", None) == "cli":
                batch = self._download_batch(storage, to, todo, verify, finished)
            if batch:
                workers = ThreadPoolExecutor(max_workers=8 if getattr(storage.backend, "name", None) == "boto3" else 4)
                try:
                    futures = [workers.submit(fetch, item) for item in batch]
                    self._wait_futures(futures, lambda f: finished(f.result()), abortable=True)
                finally:
                    workers.shutdown(wait=True)
        except (StorageError, OSError) as e:
            save_state(force=True)
            bytes_progress.abandon()
            self.check_abort()
            raise PhaseFailed("DATA_FAILED", "downloading %s to %s failed: %s" % (where, to, e), "data")
        except BaseException:
            save_state(force=True)
            bytes_progress.abandon()
            raise
        save_state(force=True)
        self.check_abort()
        self.log_note("data: %s: %d files, %d bytes (%d downloaded, %d unchanged) in %.1f s"
                      % (where, len(plan), total, len(todo), skipped, time.monotonic() - t0))

    def _download_batch(self, storage, to, todo, verify, finished):
        """The aws CLI costs a process per call: fetch many objects with one `s3 cp --recursive` per
        batch into a staging folder, verify, move into place. Returns the items left to fetch one by one."""
        staging = os.path.join(to, ".runctl-data-staging-%s" % secrets.token_hex(4))
        left = []
        try:
            os.makedirs(staging)
            storage.download_many("", [t[1] for t in todo], staging)
            for item in todo:
                self.check_abort()
                rel, _key, size, etag = item
                staged = os.path.join(staging, *rel.split("/"))
                if os.path.isfile(staged) and not os.path.islink(staged) and verify(staged, size, etag) is None:
                    os.replace(staged, os.path.join(to, *rel.split("/")))
                    finished(item)
                else:
                    left.append(item)  # fetched again on its own, and verified
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return left

"""S3Storage (retries over a backend) and open_storage (descriptor -> storage)."""

import os
import secrets
import time

from .fsutil import _unlink_quiet, safe_rel
from .s3_boto import _Boto3Backend, _import_boto3
from .s3_cli import _CliBackend, _find_aws_cli, s3_backend_missing_message
from .s3util import S3OpError, S3_BACKOFF_MAX_S, S3_DELETE_BATCH, S3_MULTIPART, S3_RETRY_BUDGET_S, StorageRetriesExhausted, StorageUnavailable, check_s3_descriptor, hash_file
from .storage_dir import DirStorage, StorageError


class S3Storage:
    """A bucket and key prefix, reached with boto3 or the aws CLI. Keys are `a/b/c` below the prefix.

    Every call is retried on transient failures (connection refused, resets, 5xx, throttling) with
    backoff for up to `retry_budget_s` from its first failure; `warn` (if set) hears about each
    failed attempt, and `interrupted` (if set) returning True gives up early."""

    kind = "s3"

    def __init__(self, desc, creds=None, work_dir=None, path_env=None):
        cfg = check_s3_descriptor(desc)
        self.cfg = cfg
        self.bucket = cfg["bucket"]
        self.prefix = cfg["prefix"]
        self.warn = None
        self.interrupted = None
        self.retry_budget_s = S3_RETRY_BUDGET_S
        work_dir = work_dir or os.path.join(os.path.expanduser("~"), ".runctl-agent")
        path_env = path_env if path_env is not None else os.environ.get("PATH", os.defpath)
        boto_err = cli_err = "not tried"
        backend = None
        if cfg["backend"] in ("auto", "boto3"):
            mod, boto_err = _import_boto3()
            if mod is not None:
                backend = _Boto3Backend(cfg, creds)
        if backend is None and cfg["backend"] in ("auto", "cli"):
            exe, info = _find_aws_cli(path_env)
            if exe is not None:
                backend = _CliBackend(cfg, creds, exe, info, work_dir, path_env)
            else:
                cli_err = info
        if backend is None:
            raise StorageUnavailable(s3_backend_missing_message(cfg, boto_err, cli_err))
        backend.should_stop = lambda: self.interrupted is not None and self.interrupted()
        self.backend = backend

    def describe(self):
        return "%s via %s" % (self.location(""), self.backend.version)

    def _key(self, key):
        rel = safe_rel(key)
        if rel is None:
            raise StorageError("invalid storage key %r" % key)
        return self.prefix + "/" + rel if self.prefix else rel

    def _folder(self, prefix):
        p = "/".join(x for x in prefix.split("/") if x)
        if not p:
            return self.prefix + "/" if self.prefix else ""
        return self._key(p) + "/"

    def location(self, key):
        p = "/".join(x for x in (self.prefix + "/" + key).split("/") if x)
        return "s3://%s/%s" % (self.bucket, p)

    def _sleep(self, seconds):
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return True
            if self.interrupted is not None and self.interrupted():
                return False
            time.sleep(min(0.1, left))

    def _retry(self, fn):
        start = None
        attempt = 0
        delay = 0.5
        while True:
            attempt += 1
            try:
                return fn()
            except S3OpError as e:
                if not e.transient:
                    raise
                now = time.monotonic()
                if start is None:
                    start = now
                stopped = self.interrupted is not None and self.interrupted()
                if stopped or now - start + delay > self.retry_budget_s:
                    raise StorageRetriesExhausted("%s (gave up after %d attempts in %.0f s)" % (e, attempt, now - start))
                if self.warn is not None:
                    try:
                        self.warn("S3 %s (attempt %d); retrying in %.1f s" % (e, attempt, delay))
                    except Exception:
                        pass
                if not self._sleep(delay):
                    raise StorageRetriesExhausted("%s (stopped after %d attempts)" % (e, attempt))
                # Exponential with a little jitter, so parallel transfers do not retry in lockstep.
                delay = min(delay * 2, S3_BACKOFF_MAX_S) * (0.8 + 0.4 * (secrets.randbelow(1000) / 1000.0))

    def _op(self, fn):
        try:
            return self._retry(fn)
        except S3OpError as e:
            raise StorageError(str(e))

    def put_file(self, key, src, on_bytes=None):
        """Upload src to key; returns (size, sha256) of the bytes hashed just before the upload (the
        commit then checks the file did not change; the upload carries their MD5 for the server).
        on_bytes(size) is told once the object is stored (the backends report no finer steps)."""
        full = self._key(key)
        streamed = getattr(self.backend, "put_file_streamed", None)
        if streamed is not None and os.path.getsize(src) > S3_MULTIPART:
            # One read of the file: the parts are hashed and uploaded as they are read (s3_boto.py);
            # a file that changes size meanwhile raises SourceChanged (not retried).
            size, sha = self._op(lambda: streamed(full, src))
        else:
            size, digests = hash_file(src, ("sha256", "md5"))
            self._op(lambda: self.backend.put_file(full, src, size, digests["md5"], digests["sha256"]))
            sha = digests["sha256"]
        if on_bytes is not None:
            on_bytes(size)
        return size, sha

    def put_bytes(self, key, data):
        full = self._key(key)
        self._op(lambda: self.backend.put_bytes(full, bytes(data)))

    def get_bytes(self, key):
        full = self._key(key)

        def go():
            try:
                return self.backend.get_bytes(full)
            except S3OpError as e:
                if e.not_found:
                    return None
                raise
        return self._op(go)

    def get_file(self, key, dest, size_hint=None, md5=True):
        """Download key to dest; returns (size, sha256, md5, etag_is_md5) of what arrived (etag_is_md5:
        the object is not SSE-KMS/SSE-C encrypted), or None if there is no such object. With md5=False
        only the sha256 is computed (md5 is then None): a checkpoint restore verifies nothing else."""
        full = self._key(key)

        def go():
            try:
                return bool(self.backend.get_file(full, dest, size_hint))
            except S3OpError as e:
                if e.not_found:
                    return None
                raise
        etag_is_md5 = self._op(go)
        if etag_is_md5 is None:
            _unlink_quiet(dest)
            return None
        size, d = hash_file(dest, ("sha256", "md5") if md5 else ("sha256",))
        return size, d["sha256"], d.get("md5"), etag_is_md5

    def upload_tree(self, local_dir, prefix):
        """Upload a whole folder below prefix with one call where the backend can (the aws CLI);
        False when it cannot, and the caller uploads file by file."""
        put_many = getattr(self.backend, "put_many", None)
        if put_many is None:
            return False
        folder = self._folder(prefix)
        self._op(lambda: put_many(local_dir, folder))
        return True

    def download_many(self, prefix, keys, staging):
        """Best effort bulk download of keys (relative to the storage root, below prefix) into
        staging/<key relative to prefix>, where the backend has a cheaper way than one call per key."""
        get_many = getattr(self.backend, "get_many", None)
        if get_many is None:
            return
        folder = self._folder(prefix)
        base = len(self.prefix) + 1 if self.prefix else 0
        rels = []
        for k in keys:
            full = self._key(k)
            rels.append(full[len(folder):] if full.startswith(folder) else full[base:])
        self._op(lambda: get_many(folder, rels, staging))

    def list_objects(self, prefix):
        """[(key relative to the storage root, size, etag)] below the folder-like prefix, sorted."""
        folder = self._folder(prefix)
        base = len(self.prefix) + 1 if self.prefix else 0
        items = self._op(lambda: self.backend.list(folder))
        out = [(k[base:], size, etag) for k, size, etag in items if k.startswith(folder)]
        out.sort()
        return out

    def list(self, prefix):
        return [k for k, _s, _e in self.list_objects(prefix)]

    def delete(self, key):
        full = self._key(key)
        self._op(lambda: self.backend.delete(full))

    def delete_prefix(self, prefix):
        keys = [self._key(k) for k in self.list(prefix)]
        for i in range(0, len(keys), S3_DELETE_BATCH):
            batch = keys[i:i + S3_DELETE_BATCH]
            self._op(lambda: self.backend.delete_many(batch))


def check_descriptor(desc):
    """Syntax of a storage descriptor (no connection): StorageError when it cannot be used."""
    if not isinstance(desc, dict):
        raise StorageError("storage descriptor must be an object")
    kind = desc.get("kind")
    if kind == "dir":
        if not isinstance(desc.get("path"), str) or not desc.get("path"):
            raise StorageError("dir storage needs a path")
        return
    if kind == "s3":
        check_s3_descriptor(desc)
        return
    raise StorageError("storage kind %r is not supported by this agent" % (kind,))


def open_storage(desc, creds=None, work_dir=None, path_env=None):
    """A storage for a descriptor. `creds` is the `aws` object of the launch secrets (or None: the
    machine's own credential chain). StorageUnavailable when no client for it exists here."""
    check_descriptor(desc)
    if desc["kind"] == "dir":
        return DirStorage(desc.get("path"))
    return S3Storage(desc, creds, work_dir, path_env)

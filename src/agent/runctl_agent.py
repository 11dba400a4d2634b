#!/usr/bin/env python3
"""runctl-agent: the machine-side supervisor of one runctl run.

One file, standard library only, Python >= 3.8. The contract with the TypeScript side is
docs/agent-protocol.md: every command prints JSON on stdout; the run itself is driven by a detached
daemon (`supervise`) that writes everything to files in the run directory, so no client connection
ever has to stay up.
"""

import collections
import datetime
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3  # also "already running"
EXIT_NO_RUN = 4
EXIT_LOST = 5
EXIT_VERIFY = 6
EXIT_UNSAFE = 7

TAIL_BYTES = 4096
CHUNK = 1 << 20
FOLLOW_POLL_S = 0.1
FOLLOW_HB_S = 2.0
SYNC_SMALL_FILE = 1 << 20  # synced files up to this size are written by the writer threads
SYNC_WRITERS = 4
FOLLOW_MAX_LINE = 1 << 20  # a longer unterminated line is sent in pieces, so memory stays bounded
COMMIT_TRIES = 3
IMDS_ENDPOINT = "http://169.254.169.254"
IMDS_TOKEN_TTL_S = 21600
IMDS_TIMEOUT_S = 1.0

USAGE = (
    "usage: runctl_agent.py launch RUN_DIR < spec.json"
    " | follow RUN_DIR [--log-offset N] [--events-offset M] [--max-wait-ms N] [--max-bytes N]"
    " | signal RUN_DIR interrupt|kill | status RUN_DIR | reap RUN_DIR | manifest DIR | sync-apply DIR < tar"
    " | sync-apply DIR --staged < {storage, key, secrets}"
)


# ---------------------------------------------------------------------------------------------
# small helpers


class UsageError(Exception):
    pass


def now_ms():
    return int(time.time() * 1000)


def now_iso():
    t = datetime.datetime.now(datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def print_json(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def tmp_name(path):
    d, b = os.path.split(path)
    return os.path.join(d, ".%s.tmp-%d-%s" % (b[:80], os.getpid(), secrets.token_hex(4)))


def atomic_write(path, data, fsync=False, mode=0o600):
    """Write to a temporary name in the same folder, then rename: readers see old or new, never half.
    Private by default (0600): run records hold the user's environment (tokens in spec.json)."""
    tmp = tmp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quiet(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quiet(tmp)
        raise


RUN_DIR_MODE = 0o700


def make_private_dir(path):
    """Create `path` (and missing parents) and make it 0700 even when it existed: a run folder holds
    spec.json with the user's environment, readable by the user only (whatever the umask)."""
    os.makedirs(path, mode=RUN_DIR_MODE, exist_ok=True)
    os.chmod(path, RUN_DIR_MODE)


def _unlink_quiet(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def read_json_file(path):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError):
        return None


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def canonical_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def signal_name(signum):
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "SIG%d" % signum


def safe_rel(name):
    """Normalise a relative path; None when it is absolute, climbs with `..`, or is empty."""
    if not isinstance(name, str) or name.startswith("/") or "\x00" in name:
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def agent_alive(run_dir):
    """A live agent holds an exclusive flock on RUN_DIR/agent.lock for its whole life.

    Unlike `kill -0 $(cat agent.pid)` this cannot be fooled by pid reuse or by a zombie, and the
    kernel drops the lock the moment the agent dies, even by SIGKILL.
    """
    try:
        fd = os.open(os.path.join(run_dir, "agent.lock"), os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return True
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def read_pid(run_dir):
    try:
        with open(os.path.join(run_dir, "agent.pid")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def last_event(run_dir):
    """The last complete event line of events.jsonl (the exit event, once the run has ended)."""
    path = os.path.join(run_dir, "events.jsonl")
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            data = f.read()
    except OSError:
        return None
    for line in reversed(data.split(b"\n")):
        line = line.strip()
        if not line:
            continue
        try:
            return json.loads(line.decode("utf-8"))
        except ValueError:
            return None
    return None


def exit_event(run_dir):
    ev = last_event(run_dir)
    return ev if isinstance(ev, dict) and ev.get("type") == "exit" else None


# ---------------------------------------------------------------------------------------------
# storage: one small class per kind (`dir`, `s3`) with the same interface


class StorageError(Exception):
    pass


class DirStorage:
    """A storage root that is a folder the machine can see. Keys are `a/b/c` relative paths."""

    kind = "dir"

    def __init__(self, root):
        if not isinstance(root, str) or not root:
            raise StorageError("dir storage needs a path")
        self.root = os.path.abspath(root)

    def _path(self, key):
        rel = safe_rel(key)
        if rel is None:
            raise StorageError("invalid storage key %r" % key)
        return os.path.join(self.root, *rel.split("/"))

    def location(self, key):
        return self._path(key)

    def put_file(self, key, src):
        """Copy src to key atomically; returns (size, sha256) of exactly the bytes stored."""
        dest = self._path(key)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = tmp_name(dest)
        h = hashlib.sha256()
        size = 0
        try:
            with open(src, "rb") as fin, open(tmp, "xb") as fout:
                while True:
                    b = fin.read(CHUNK)
                    if not b:
                        break
                    h.update(b)
                    size += len(b)
                    fout.write(b)
                fout.flush()
                os.fsync(fout.fileno())
            os.replace(tmp, dest)
        except BaseException:
            _unlink_quiet(tmp)
            raise
        return size, h.hexdigest()

    def put_bytes(self, key, data):
        dest = self._path(key)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        atomic_write(dest, data, fsync=True)

    def get_bytes(self, key):
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def get_file(self, key, dest):
        """Copy key to dest; returns (size, sha256), or None when the object does not exist."""
        h = hashlib.sha256()
        size = 0
        try:
            fin = open(self._path(key), "rb")
        except FileNotFoundError:
            return None
        with fin, open(dest, "wb") as fout:
            while True:
                b = fin.read(CHUNK)
                if not b:
                    break
                h.update(b)
                size += len(b)
                fout.write(b)
        return size, h.hexdigest()

    def list(self, prefix):
        """Every key below prefix (a folder-like `a/b/`), sorted."""
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        out = []
        for dirpath, _dirs, files in os.walk(base):
            for fn in files:
                full = os.path.join(dirpath, fn)
                out.append(os.path.relpath(full, self.root).replace(os.sep, "/"))
        out.sort()
        return out

    def delete(self, key):
        _unlink_quiet(self._path(key))

    def delete_prefix(self, prefix):
        shutil.rmtree(self._path(prefix.rstrip("/")), ignore_errors=True)


class StorageUnavailable(StorageError):
    """No client for this storage on the machine (no boto3, no aws CLI): STORAGE_UNREACHABLE."""


class StorageRetriesExhausted(StorageError):
    """A transient failure (connection refused, 5xx) that outlasted the retry budget."""


S3_RETRY_BUDGET_S = 60.0  # per operation, from its first failure: rides out a restarting server
S3_BACKOFF_MAX_S = 5.0
S3_MULTIPART = 64 << 20  # larger objects use multipart uploads / parallel ranged downloads
S3_DELETE_BATCH = 1000
DATA_STATE_FILE = ".runctl-data.json"
S3_TRANSIENT_CODES = frozenset((
    "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling", "ThrottlingException",
    "RequestLimitExceeded", "RequestThrottled", "TooManyRequests", "OperationAborted",
))
S3_NOT_FOUND_CODES = frozenset(("NoSuchKey", "404", "NotFound"))
# Text of connection-level failures, as the aws CLI (v1 and v2) and botocore print them.
S3_TRANSIENT_TEXT = (
    "could not connect to the endpoint", "connection was closed", "connection reset", "connection refused",
    "connection aborted", "read timeout", "connect timeout", "timed out", "broken pipe", "incompleteread",
    "incomplete read", "remotedisconnected", "remote end closed", "endpointconnectionerror", "connectionclosederror",
    "temporarily unavailable", "name resolution", "max retries exceeded", "protocolerror", "responsestreamingerror",
)
_S3_CODE_RE = re.compile(r"An error occurred \(([^)]*)\)")
_S3_LOCAL_ERRNOS = frozenset((errno.ENOSPC, errno.ENOENT, errno.EACCES, errno.EROFS, errno.EISDIR, errno.ENOTDIR,
                              errno.EDQUOT, errno.EPERM, errno.EEXIST))


class S3OpError(Exception):
    """One failed S3 call: transient ones are retried, `not_found` is a missing object."""

    def __init__(self, message, transient=False, code=None):
        Exception.__init__(self, message)
        self.transient = transient
        self.code = code
        self.not_found = code in S3_NOT_FOUND_CODES


def _classify_text(text):
    """(transient, code) from an error text of the aws CLI or botocore."""
    m = _S3_CODE_RE.search(text)
    code = m.group(1) if m else None
    if code is not None:
        return (code in S3_TRANSIENT_CODES or (code.isdigit() and int(code) >= 500)), code
    low = text.lower()
    return any(t in low for t in S3_TRANSIENT_TEXT), None


def _short(text, limit=600):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _new_hash(name):
    try:
        return hashlib.new(name)
    except ValueError:  # FIPS builds refuse MD5 unless it is not used for security (3.9+)
        return hashlib.new(name, usedforsecurity=False)


def hash_file(path, algos=("sha256",)):
    """(size, {algo: hexdigest}) of a file, in one pass."""
    hs = {a: _new_hash(a) for a in algos}
    size = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            size += len(b)
            for h in hs.values():
                h.update(b)
    return size, {a: h.hexdigest() for a, h in hs.items()}


def hash_bytes_md5(data):
    h = _new_hash("md5")
    h.update(data)
    return h.hexdigest()


def _md5_b64(hexdigest):
    import base64
    import binascii
    return base64.b64encode(binascii.unhexlify(hexdigest)).decode("ascii")


def _clean_etag(etag):
    return (etag or "").strip().strip('"')


def _etag_is_md5(response):
    """False when the object is encrypted with SSE-KMS or SSE-C: its ETag is then not the MD5 of its bytes."""
    sse = str(response.get("ServerSideEncryption") or "")
    return not sse.startswith("aws:kms") and not response.get("SSECustomerAlgorithm")


def is_single_part_etag(etag):
    return re.match(r"^[0-9a-f]{32}$", _clean_etag(etag)) is not None


def check_s3_descriptor(desc):
    """The normalised fields of an `s3` descriptor; StorageError when one is invalid."""
    bucket = desc.get("bucket")
    if not isinstance(bucket, str) or not bucket or "/" in bucket:
        raise StorageError("s3 storage needs a bucket name")
    prefix = desc.get("prefix") or ""
    if not isinstance(prefix, str):
        raise StorageError("s3 storage prefix must be a string")
    prefix = "/".join(p for p in prefix.split("/") if p)
    region = desc.get("region") or None
    endpoint = desc.get("endpoint") or None
    if region is not None and not isinstance(region, str):
        raise StorageError("s3 storage region must be a string or null")
    if endpoint is not None and (not isinstance(endpoint, str) or not re.match(r"^https?://", endpoint)):
        raise StorageError("s3 storage endpoint must be an http(s) URL or null")
    checksums = desc.get("checksums") or "when_supported"
    if checksums not in ("when_supported", "when_required"):
        raise StorageError("s3 storage checksums must be when_supported or when_required")
    backend = desc.get("backend") or "auto"
    if backend not in ("auto", "boto3", "cli"):
        raise StorageError("s3 storage backend must be auto, boto3 or cli")
    return {
        "bucket": bucket, "prefix": prefix, "region": region, "endpoint": endpoint,
        "forcePathStyle": bool(desc.get("forcePathStyle")), "checksums": checksums, "backend": backend,
    }


_BOTO3_STATE = {}  # "module" or "error", set once per process
_AWS_CLI_CACHE = {}  # PATH -> (path, version) or (None, why)
_BACKEND_LOCK = threading.Lock()


def _import_boto3():
    with _BACKEND_LOCK:
        if "module" not in _BOTO3_STATE and "error" not in _BOTO3_STATE:
            try:
                import boto3  # optional at runtime
                import botocore.config
                import botocore.exceptions
                botocore.exceptions.ClientError  # the parts the backend uses must import too
                _BOTO3_STATE["module"] = boto3
            except Exception as e:  # an ImportError, or a broken install
                _BOTO3_STATE["error"] = "%s: %s" % (type(e).__name__, e)
        return _BOTO3_STATE.get("module"), _BOTO3_STATE.get("error")


def _find_aws_cli(path_env):
    with _BACKEND_LOCK:
        if path_env in _AWS_CLI_CACHE:
            return _AWS_CLI_CACHE[path_env]
        exe = shutil.which("aws", path=path_env)
        if exe is None:
            found = (None, "no `aws` on PATH")
        else:
            try:
                env = dict(os.environ, PATH=path_env, AWS_PAGER="")
                out = subprocess.run([exe, "--version"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env, timeout=60)
                text = out.stdout.decode("utf-8", "replace").strip()
                m = re.search(r"aws-cli/(\d+)\.(\d+)\.(\d+)", text)
                if out.returncode != 0 or not m:
                    found = (None, "%s --version failed: %s" % (exe, _short(text, 300)))
                else:
                    found = (exe, m.group(0))
            except (OSError, subprocess.TimeoutExpired) as e:
                found = (None, "%s cannot run: %s" % (exe, e))
        _AWS_CLI_CACHE[path_env] = found
        return found


class _Boto3Backend:
    name = "boto3"

    def __init__(self, cfg, creds):
        boto3, _err = _import_boto3()
        import botocore.config
        import botocore.exceptions
        self.exc = botocore.exceptions
        self.bucket = cfg["bucket"]
        kwargs = {"region_name": cfg["region"]} if cfg["region"] else {}
        if creds:
            kwargs.update(aws_access_key_id=creds["accessKeyId"], aws_secret_access_key=creds["secretAccessKey"],
                          aws_session_token=creds.get("sessionToken") or None)
        # A Session of our own: the default session is shared and not thread-safe to create.
        session = boto3.session.Session(**kwargs)
        # One attempt per call: S3Storage retries (and reports each failed attempt as a warning).
        conf = {"retries": {"max_attempts": 1, "mode": "standard"}, "connect_timeout": 10, "read_timeout": 60,
                "max_pool_connections": 16}
        if cfg["forcePathStyle"]:
            conf["s3"] = {"addressing_style": "path"}
        options = getattr(botocore.config.Config, "OPTION_DEFAULTS", {})
        if cfg["checksums"] == "when_required" and "request_checksum_calculation" in options:
            conf["request_checksum_calculation"] = "when_required"
            conf["response_checksum_validation"] = "when_required"
        self.client = session.client("s3", endpoint_url=cfg["endpoint"], config=botocore.config.Config(**conf))
        self.version = "boto3 %s (botocore %s)" % (getattr(boto3, "__version__", "?"), getattr(botocore, "__version__", "?"))

    def _error(self, what, e):
        if isinstance(e, self.exc.ClientError):
            err = e.response.get("Error") or {}
            code = str(err.get("Code") or "")
            status = (e.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
            transient = code in S3_TRANSIENT_CODES or status >= 500 or status == 429
            if status == 404 and code not in S3_NOT_FOUND_CODES and code != "NoSuchBucket":
                code = "404"
            return S3OpError("%s: %s" % (what, _short(e)), transient, code)
        permanent = tuple(getattr(self.exc, n) for n in (
            "NoCredentialsError", "PartialCredentialsError", "ParamValidationError", "NoRegionError",
            "UnknownSignatureVersionError", "CredentialRetrievalError") if hasattr(self.exc, n))
        if isinstance(e, permanent):
            return S3OpError("%s: %s" % (what, _short(e)), False)
        if isinstance(e, OSError) and e.errno in _S3_LOCAL_ERRNOS and not isinstance(e, self.exc.BotoCoreError):
            return S3OpError("%s: %s" % (what, _short(e)), False)
        if isinstance(e, (self.exc.BotoCoreError, OSError)) or type(e).__module__.split(".")[0] in ("urllib3", "http", "socket"):
            return S3OpError("%s: %s" % (what, _short(e)), True)
        transient, code = _classify_text(str(e))  # e.g. boto3's S3UploadFailedError wraps the real one
        return S3OpError("%s: %s" % (what, _short(e)), transient, code)

    should_stop = None  # set by S3Storage: True when a transfer under way should be abandoned

    def _check_stop(self, _n=0):
        if self.should_stop is not None and self.should_stop():
            raise S3OpError("stopped", False)

    def _call(self, what, fn):
        try:
            return fn()
        except S3OpError:
            raise
        except Exception as e:
            if isinstance(e.__context__, S3OpError) and str(e.__context__) == "stopped":
                raise S3OpError("%s: stopped" % what, False)
            raise self._error(what, e)

    def put_file(self, key, src, size, md5_hex, sha_hex):
        what = "upload to s3://%s/%s" % (self.bucket, key)

        def go():
            if size <= S3_MULTIPART:
                with open(src, "rb") as f:
                    self.client.put_object(Bucket=self.bucket, Key=key, Body=f, ContentMD5=_md5_b64(md5_hex),
                                           Metadata={"sha256": sha_hex})
            else:
                from boto3.s3.transfer import TransferConfig
                tc = TransferConfig(multipart_threshold=S3_MULTIPART, multipart_chunksize=S3_MULTIPART, max_concurrency=4)
                self.client.upload_file(src, self.bucket, key, ExtraArgs={"Metadata": {"sha256": sha_hex}}, Config=tc,
                                        Callback=self._check_stop)
        self._call(what, go)

    def put_bytes(self, key, data):
        md5 = hash_bytes_md5(data)
        self._call("upload to s3://%s/%s" % (self.bucket, key),
                   lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentMD5=_md5_b64(md5)))

    def get_bytes(self, key):
        def go():
            r = self.client.get_object(Bucket=self.bucket, Key=key)
            with r["Body"] as body:
                return body.read()
        return self._call("download of s3://%s/%s" % (self.bucket, key), go)

    def get_file(self, key, dest, size_hint=None):
        """Download key to dest; returns whether its ETag can be the MD5 of its bytes (not with SSE-KMS/SSE-C)."""
        def go():
            if size_hint is not None and size_hint > S3_MULTIPART:
                from boto3.s3.transfer import TransferConfig
                head = self.client.head_object(Bucket=self.bucket, Key=key)
                tc = TransferConfig(multipart_threshold=S3_MULTIPART, multipart_chunksize=S3_MULTIPART, max_concurrency=4)
                self.client.download_file(self.bucket, key, dest, Config=tc, Callback=self._check_stop)
                return _etag_is_md5(head)
            r = self.client.get_object(Bucket=self.bucket, Key=key)
            with r["Body"] as body, open(dest, "wb") as out:
                while True:
                    self._check_stop()
                    b = body.read(CHUNK)
                    if not b:
                        break
                    out.write(b)
            return _etag_is_md5(r)
        return self._call("download of s3://%s/%s" % (self.bucket, key), go)

    def list(self, prefix):
        def go():
            out = []
            kwargs = {"Bucket": self.bucket, "Prefix": prefix}
            while True:
                r = self.client.list_objects_v2(**kwargs)
                for o in r.get("Contents") or []:
                    out.append((o["Key"], int(o.get("Size") or 0), _clean_etag(o.get("ETag"))))
                token = r.get("NextContinuationToken")
                if not r.get("IsTruncated") or not token:
                    return out
                kwargs["ContinuationToken"] = token
        return self._call("listing of s3://%s/%s" % (self.bucket, prefix), go)

    def delete(self, key):
        self._call("delete of s3://%s/%s" % (self.bucket, key), lambda: self.client.delete_object(Bucket=self.bucket, Key=key))

    def delete_many(self, keys):
        def go():
            r = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
            errs = [e for e in r.get("Errors") or [] if e.get("Code") not in S3_NOT_FOUND_CODES]
            if errs:
                e = errs[0]
                raise S3OpError("delete of s3://%s/%s: %s %s" % (self.bucket, e.get("Key"), e.get("Code"), e.get("Message")),
                                e.get("Code") in S3_TRANSIENT_CODES, e.get("Code"))
        self._call("delete of %d objects in s3://%s" % (len(keys), self.bucket), go)


def _glob_escape(text):
    return re.sub(r"([*?\[])", r"[\1]", text)


class _CliBackend:
    """The aws CLI (v1 or v2) as subprocesses. Credentials go only into those subprocesses' environment;
    no command line ever holds a secret."""

    name = "cli"

    def __init__(self, cfg, creds, exe, version, work_dir, path_env):
        self.bucket = cfg["bucket"]
        self.exe = exe
        self.version = version
        self.v2 = version.startswith("aws-cli/2.")
        self.work_dir = work_dir
        env = dict(os.environ)
        env["PATH"] = path_env
        env["AWS_PAGER"] = ""
        # One attempt per call: S3Storage retries (and reports each failed attempt as a warning).
        env["AWS_RETRY_MODE"] = "standard"
        env["AWS_MAX_ATTEMPTS"] = "1"
        if creds:
            for k in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
                env.pop(k, None)
            env["AWS_ACCESS_KEY_ID"] = creds["accessKeyId"]
            env["AWS_SECRET_ACCESS_KEY"] = creds["secretAccessKey"]
            if creds.get("sessionToken"):
                env["AWS_SESSION_TOKEN"] = creds["sessionToken"]
        if cfg["checksums"] == "when_required":
            env["AWS_REQUEST_CHECKSUM_CALCULATION"] = "when_required"
            env["AWS_RESPONSE_CHECKSUM_VALIDATION"] = "when_required"
        if cfg["region"]:
            env["AWS_DEFAULT_REGION"] = cfg["region"]
            env["AWS_REGION"] = cfg["region"]
        if cfg["forcePathStyle"]:
            # Path-style addressing has no flag or variable: a config file of our own, with only
            # non-secret settings (credentials stay in the environment of each aws process).
            lines = []
            profiles = ["default"]
            if not creds and env.get("AWS_PROFILE"):
                profiles.append("profile " + env["AWS_PROFILE"])
            for section in profiles:
                lines.append("[%s]" % section)
                if cfg["region"]:
                    lines.append("region = %s" % cfg["region"])
                if cfg["checksums"] == "when_required":
                    lines.append("request_checksum_calculation = when_required")
                    lines.append("response_checksum_validation = when_required")
                lines.append("s3 =\n    addressing_style = path")
            text = "\n".join(lines) + "\n"
            path = os.path.join(work_dir, "aws-config-%s" % hashlib.sha256(text.encode()).hexdigest()[:12])
            if read_text_quiet(path) != text:
                os.makedirs(work_dir, exist_ok=True)
                atomic_write(path, text.encode("utf-8"))
            env["AWS_CONFIG_FILE"] = path
        self.env = env
        self.common = ["--output", "json", "--cli-connect-timeout", "10", "--cli-read-timeout", "60"]
        if cfg["endpoint"]:
            self.common += ["--endpoint-url", cfg["endpoint"]]
        if cfg["region"]:
            self.common += ["--region", cfg["region"]]
        if self.v2:
            self.common.append("--no-cli-pager")

    def _tmp(self, suffix=""):
        d = os.path.join(self.work_dir, ".s3-tmp")
        os.makedirs(d, exist_ok=True)
        return os.path.join(d, "%d-%s%s" % (os.getpid(), secrets.token_hex(6), suffix))

    should_stop = None  # set by S3Storage: True when a transfer under way should be abandoned

    def _run(self, what, args):
        argv = [self.exe] + args + self.common
        try:
            p = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, close_fds=True)
        except OSError as e:
            raise S3OpError("%s: aws could not start: %s" % (what, e), False)
        try:
            while True:
                try:
                    out, err = p.communicate(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    if self.should_stop is not None and self.should_stop():
                        p.kill()
                        p.communicate()
                        raise S3OpError("%s: stopped" % what, False)
        except BaseException:
            if p.poll() is None:
                p.kill()
                p.wait()
            raise
        if p.returncode != 0:
            text = err.decode("utf-8", "replace").strip() or out.decode("utf-8", "replace").strip()
            transient, code = _classify_text(text)
            raise S3OpError("%s: %s" % (what, _short(text or "aws exited with %d" % p.returncode)), transient, code)
        return out

    def put_file(self, key, src, size, md5_hex, sha_hex):
        what = "upload to s3://%s/%s" % (self.bucket, key)
        if size <= S3_MULTIPART:
            self._run(what, ["s3api", "put-object", "--bucket", self.bucket, "--key", key, "--body", src,
                             "--content-md5", _md5_b64(md5_hex), "--metadata", "sha256=" + sha_hex])
        else:
            self._run(what, ["s3", "cp", src, "s3://%s/%s" % (self.bucket, key), "--only-show-errors", "--no-progress",
                             "--metadata", "sha256=" + sha_hex])

    def put_bytes(self, key, data):
        tmp = self._tmp()
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            self._run("upload to s3://%s/%s" % (self.bucket, key),
                      ["s3api", "put-object", "--bucket", self.bucket, "--key", key, "--body", tmp,
                       "--content-md5", _md5_b64(hash_bytes_md5(data))])
        finally:
            _unlink_quiet(tmp)

    def get_bytes(self, key):
        tmp = self._tmp()
        try:
            self.get_file(key, tmp)
            with open(tmp, "rb") as f:
                return f.read()
        finally:
            _unlink_quiet(tmp)

    def get_file(self, key, dest, size_hint=None):
        """Download key to dest; returns whether its ETag can be the MD5 of its bytes (not with SSE-KMS/SSE-C)."""
        what = "download of s3://%s/%s" % (self.bucket, key)
        if size_hint is not None and size_hint > S3_MULTIPART:
            out = self._run(what, ["s3api", "head-object", "--bucket", self.bucket, "--key", key])
            self._run(what, ["s3", "cp", "s3://%s/%s" % (self.bucket, key), dest, "--only-show-errors", "--no-progress"])
        else:
            out = self._run(what, ["s3api", "get-object", "--bucket", self.bucket, "--key", key, dest])
        try:
            return _etag_is_md5(json.loads(out.decode("utf-8", "replace") or "{}") or {})
        except ValueError:
            return True

    def get_many(self, prefix, rels, staging):
        """Download prefix+rel for every rel into staging/rel with few aws processes (one `s3 cp
        --recursive` per batch of names); the caller verifies what arrived."""
        batch = []
        size = 0
        for rel in rels + [None]:
            if rel is not None:
                batch += ["--include", _glob_escape(rel)]
                size += len(rel) + 16
            if batch and (rel is None or size > 64000):
                self._run("download of s3://%s/%s (%d objects)" % (self.bucket, prefix, len(batch) // 2),
                          ["s3", "cp", "s3://%s/%s" % (self.bucket, prefix), staging, "--recursive", "--only-show-errors",
                           "--no-progress", "--exclude", "*"] + batch)
                batch = []
                size = 0

    def put_many(self, local_dir, prefix):
        """Upload every regular file below local_dir to prefix/<relative path> with one aws process."""
        self._run("upload of %s to s3://%s/%s" % (local_dir, self.bucket, prefix),
                  ["s3", "cp", local_dir, "s3://%s/%s" % (self.bucket, prefix), "--recursive", "--no-follow-symlinks",
                   "--only-show-errors", "--no-progress"])

    def list(self, prefix):
        out = self._run("listing of s3://%s/%s" % (self.bucket, prefix),
                        ["s3api", "list-objects-v2", "--bucket", self.bucket, "--prefix", prefix])
        text = out.decode("utf-8", "replace").strip()
        if not text:
            return []
        try:
            doc = json.loads(text)
        except ValueError:
            raise S3OpError("listing of s3://%s/%s: aws printed no JSON: %s" % (self.bucket, prefix, _short(text, 200)), False)
        return [(o["Key"], int(o.get("Size") or 0), _clean_etag(o.get("ETag"))) for o in (doc or {}).get("Contents") or []]

    def delete(self, key):
        self._run("delete of s3://%s/%s" % (self.bucket, key), ["s3api", "delete-object", "--bucket", self.bucket, "--key", key])

    def delete_many(self, keys):
        tmp = self._tmp(".json")
        try:
            with open(tmp, "w") as f:
                json.dump({"Objects": [{"Key": k} for k in keys], "Quiet": True}, f)
            out = self._run("delete of %d objects in s3://%s" % (len(keys), self.bucket),
                            ["s3api", "delete-objects", "--bucket", self.bucket, "--delete", "file://" + tmp])
        finally:
            _unlink_quiet(tmp)
        try:
            doc = json.loads(out.decode("utf-8", "replace") or "{}") or {}
        except ValueError:
            doc = {}
        errs = [e for e in doc.get("Errors") or [] if e.get("Code") not in S3_NOT_FOUND_CODES]
        if errs:
            e = errs[0]
            raise S3OpError("delete of s3://%s/%s: %s %s" % (self.bucket, e.get("Key"), e.get("Code"), e.get("Message")),
                            e.get("Code") in S3_TRANSIENT_CODES, e.get("Code"))


def read_text_quiet(path):
    try:
        with open(path, "r") as f:
            return f.read()
    except OSError:
        return None


def s3_backend_missing_message(cfg, boto_err, cli_err):
    where = "s3://%s/%s" % (cfg["bucket"], cfg["prefix"])
    py = sys.executable or "python3"
    if cfg["backend"] == "boto3":
        return ("S3 storage %s uses backend boto3, but the agent's interpreter %s cannot import it (%s). Install it on the "
                "machine (`%s -m pip install boto3` or `apt-get install python3-boto3`), add that to .setup({ commands: [...] }), "
                "or use backend auto/cli." % (where, py, boto_err, py))
    if cfg["backend"] == "cli":
        return ("S3 storage %s uses backend cli, but the aws CLI is not usable (%s). Install it on the machine "
                "(`apt-get install awscli`, `pip install awscli`, or AWS CLI v2), add that to .setup({ commands: [...] }), "
                "or use backend auto/boto3." % (where, cli_err))
    return ("S3 storage %s needs boto3 (importable by the agent's interpreter %s) or the aws CLI on PATH, and the machine "
            "has neither (boto3: %s; aws: %s). Install one: `%s -m pip install boto3`, `apt-get install python3-boto3` or "
            "`apt-get install awscli`, or add that to .setup({ commands: [...] })." % (where, py, boto_err, cli_err, py))


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

    def put_file(self, key, src):
        """Upload src to key; returns (size, sha256) of the bytes hashed just before the upload (the
        commit then checks the file did not change; the upload carries their MD5 for the server)."""
        full = self._key(key)
        size, digests = hash_file(src, ("sha256", "md5"))
        self._op(lambda: self.backend.put_file(full, src, size, digests["md5"], digests["sha256"]))
        return size, digests["sha256"]

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

    def get_file(self, key, dest, size_hint=None):
        """Download key to dest; returns (size, sha256, md5, etag_is_md5) of what arrived (etag_is_md5:
        the object is not SSE-KMS/SSE-C encrypted), or None if there is no such object."""
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
        size, d = hash_file(dest, ("sha256", "md5"))
        return size, d["sha256"], d["md5"], etag_is_md5

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


# ---------------------------------------------------------------------------------------------
# checkpoints


CKPT_SKIP_SUFFIXES = (".tmp", ".partial", "~", ".done")


def is_candidate(name):
    return not name.startswith(".") and not name.endswith(CKPT_SKIP_SUFFIXES)


def entry_signature(path):
    """(relpath, size, mtime_ns) of every regular file of a checkpoint entry; None if not one.

    A single-file checkpoint has relpath "". Symlinks are skipped so a link can never pull files
    from outside the checkpoint into storage.
    """
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISREG(st.st_mode):
        return (("", st.st_size, st.st_mtime_ns),)
    if not stat.S_ISDIR(st.st_mode):
        return None
    sig = []
    for dirpath, dirs, files in os.walk(path):
        dirs.sort()
        for fn in files:
            full = os.path.join(dirpath, fn)
            try:
                fst = os.lstat(full)
            except OSError:
                continue
            if stat.S_ISREG(fst.st_mode):
                rel = os.path.relpath(full, path).replace(os.sep, "/")
                sig.append((rel, fst.st_size, fst.st_mtime_ns))
    sig.sort()
    return tuple(sig) or None


def step_of(ckpt_dir, name):
    """`step` from `<name>.done` JSON if present, else the last run of digits in the name."""
    done = read_json_file(os.path.join(ckpt_dir, name + ".done"))
    if isinstance(done, dict) and isinstance(done.get("step"), int) and not isinstance(done.get("step"), bool):
        return done["step"]
    digits = re.findall(r"\d+", name)
    return int(digits[-1]) if digits else None


GEN_RE = re.compile(r"^g([0-9]+)$")


def gen_name(seq):
    """The storage folder of one commit of a checkpoint: `g` + its commit seq, zero-padded."""
    return "g%08d" % seq


def ckpt_name_prefix(run_id, name):
    return "%s/checkpoints/%s/" % (run_id, name)


def ckpt_gen_prefix(run_id, name, seq):
    """`<run>/checkpoints/<name>/<gen>/`: holds `manifest.json` and `files/<path>` of one commit."""
    return "%s/checkpoints/%s/%s/" % (run_id, name, gen_name(seq))


def done_marker_fresh(ckpt_dir, name, sig):
    """`<name>.done` exists and is at least as new as every file of the entry: a marker left from an
    earlier version of the entry does not vouch for a rewrite in progress."""
    try:
        st = os.stat(os.path.join(ckpt_dir, name + ".done"))
    except OSError:
        return False
    return st.st_mtime_ns >= max(s[2] for s in sig)


class CheckpointChanged(Exception):
    """The entry changed while it was being copied: not an error, it is committed once it settles."""


class CheckpointCorrupt(Exception):
    pass


class CheckpointMissing(CheckpointCorrupt):
    """A file the manifest lists is not in storage (pruned, replaced, or lost): see _restore."""

    def __init__(self, message, manifest_key):
        CheckpointCorrupt.__init__(self, message)
        self.manifest_key = manifest_key


class CheckpointWatcher:
    """Polls the checkpoint folder and commits finished entries to storage (docs/agent-protocol.md)."""

    def __init__(self, sup, storage, run_id, cfg, hp_hash):
        self.sup = sup
        self.storage = storage
        self.run_id = run_id
        self.dir = cfg["dir"]
        self.settle_s = max(0, cfg["settleMs"]) / 1000.0
        self.poll_s = max(10, cfg["pollMs"]) / 1000.0
        keep = cfg.get("keep")
        # keep < 1 would delete even the newest checkpoint; treat it as 1.
        self.keep = None if keep is None else max(1, int(keep))
        self.hp_hash = hp_hash
        self.known = {}  # name -> signature that needs no commit (committed, restored, or failed)
        self.pending = {}  # name -> (signature, monotonic time it was first seen like that)
        # name -> signature seen unchanged for settleMs while the trainer was alive: after a crash
        # only these (and entries with a fresh .done marker) may still be committed.
        self.settled = {}
        self.stale = {}  # name -> seqs of its generations to delete besides the committed one
        self.committed = []  # [{"name", "seq", "step", "files"}] of this run in storage, oldest first
        self.next_seq = 1
        # What LATEST names, and when the trainer finished writing it (newest mtime of its files; None:
        # not written by this agent). Commits can finish out of the order the trainer wrote the entries
        # in (a `.done` entry goes at once, an older one waits to settle): LATEST only moves forward.
        self.latest_name = None
        self.latest_written = None
        self.stop_event = threading.Event()
        self.thread = None
        self._load_existing()

    def _load_existing(self):
        """A run restarted with the same runId continues its seq and retention from storage."""
        gens = {}
        for m in list_manifests(self.storage, self.run_id, gens_out=gens):
            self.committed.append({"name": m["name"], "seq": m["seq"], "step": m.get("step"), "files": m.get("files") or []})
        self.committed.sort(key=lambda c: c["seq"])
        if self.committed:
            try:
                named = (self.storage.get_bytes(self.run_id + "/LATEST") or b"").decode("utf-8", "replace").strip()
            except Exception as e:  # unreadable now: the first commit of this agent rewrites LATEST
                self.sup.debug("reading LATEST failed: %s" % e)
                named = None
            if any(c["name"] == named for c in self.committed):
                self.latest_name = named
        # Generations an earlier agent left behind (an upload cut short, or an old generation not yet
        # removed): never reused, and removed with the next commit of their name.
        live = dict((c["name"], c["seq"]) for c in self.committed)
        for name, seqs in gens.items():
            stale = set(q for q in seqs if q != live.get(name))
            if stale:
                self.stale[name] = stale
        every = [q for seqs in gens.values() for q in seqs]
        if every:
            self.next_seq = max(every) + 1

    def mark_known(self, name, sig):
        if sig:
            self.known[name] = sig

    def start(self):
        self.thread = threading.Thread(target=self._loop, name="ckpt-watcher", daemon=True)
        self.thread.start()

    def stop(self, poll=None):
        """Stops the loop and waits for a commit under way (poll, if given, runs every 0.1 s meanwhile)."""
        self.stop_event.set()
        if self.thread:
            while self.thread.is_alive():
                if poll is not None:
                    poll()
                self.thread.join(0.1)

    def _loop(self):
        while not self.stop_event.is_set():
            try:
                self.scan(final=False)
            except Exception:
                self.sup.debug("checkpoint scan failed:\n" + traceback.format_exc())
            self.stop_event.wait(self.poll_s)

    def scan(self, final, should_stop=None, drain=False, clean=True, exit_text=None):
        """One pass. final: the trainer has exited; if clean (exit status 0) every candidate counts as
        finished, else only entries that settled while it lived or have a fresh `.done` marker do, and
        each other one gets a `warning` (docs/checkpoints.md). drain: a pass of the main thread after
        stop(), which commits what is finished all the same."""
        try:
            names = [n for n in os.listdir(self.dir) if is_candidate(n)]
        except FileNotFoundError:
            return
        found = []
        for name in names:
            sig = entry_signature(os.path.join(self.dir, name))
            if sig:
                found.append((max(s[2] for s in sig), name, sig))
        # Oldest first, so seq follows the order the trainer wrote them in.
        found.sort()
        now = time.monotonic()
        for _mtime, name, sig in found:
            if should_stop and should_stop():
                return
            if not final and not drain and self.stop_event.is_set():
                return
            if self.known.get(name) == sig:
                self.pending.pop(name, None)
                continue
            prev = self.pending.get(name)
            if prev is None or prev[0] != sig:
                self.pending[name] = prev = (sig, now)
            done = done_marker_fresh(self.dir, name, sig)
            if final and not clean:
                if done or self.settled.get(name) == sig:
                    self._commit_with_retries(name, sig, final)
                else:
                    self._abandon(name, sig, exit_text or "did not exit cleanly")
                continue
            if final or done:
                self._commit_with_retries(name, sig, final)
            elif now - prev[1] >= self.settle_s and self.sup._trainer_running():
                # Checked after the signature was read: the entry stayed the same for settleMs while
                # its writer lived. A writer that died mid-write leaves an entry that merely looks
                # settled; that one is left to the final pass, which knows how the trainer exited.
                self.settled[name] = sig
                self._commit_with_retries(name, sig, final)

    def _abandon(self, name, sig, exit_text):
        """An entry still being written when the trainer died is never committed (docs/checkpoints.md)."""
        self.known[name] = sig
        self.pending.pop(name, None)
        self.sup.events.emit(
            "warning",
            message="checkpoint %s was not committed: the trainer %s while it was still being written "
            "(it had not stayed unchanged for settleMs=%d and has no fresh %s.done marker); the previous "
            "complete checkpoint stays the latest" % (name, exit_text, int(self.settle_s * 1000), name),
            checkpoint=name,
        )

    def _commit_with_retries(self, name, sig, final):
        err = None
        for attempt in range(COMMIT_TRIES):
            try:
                self.commit(name, sig)
                return
            except CheckpointChanged:
                self.pending.pop(name, None)
                return
            except Exception as e:
                err = e
                tries = attempt + 1
                self.sup.debug("commit of %s failed (try %d): %s" % (name, tries, traceback.format_exc()))
                if isinstance(e, StorageRetriesExhausted):
                    break  # the storage already retried this for its whole budget
                if attempt + 1 < COMMIT_TRIES:
                    time.sleep(0.5 * (2 ** attempt))
        self.sup.events.emit("warning", message="checkpoint %s was not committed after %d %s: %s" % (name, tries, "try" if tries == 1 else "tries", err))
        # Do not retry until the entry changes again; a retry loop would hammer broken storage.
        self.known[name] = sig
        self.pending.pop(name, None)

    def _stored(self, name):
        for c in self.committed:
            if c["name"] == name:
                return c
        return None

    def _same_as_stored(self, path, is_dir, rels, stored):
        by_path = {f.get("path"): f for f in stored.get("files") or []}
        if len(by_path) != len(rels):
            return False
        for rel in rels:
            src = os.path.join(path, rel) if is_dir else path
            f = by_path.get(rel if is_dir else os.path.basename(path))
            if not f or f.get("size") != os.path.getsize(src) or f.get("sha256") != sha256_file(src):
                return False
        return True

    def commit(self, name, sig):
        t0 = time.monotonic()
        path = os.path.join(self.dir, name)
        is_dir = sig[0][0] != ""
        rels = [s[0] for s in sig]
        stored = self._stored(name)
        if stored is not None and self._same_as_stored(path, is_dir, rels, stored):
            # Same bytes as the committed manifest (e.g. a restarted run): nothing to upload.
            self.known[name] = sig
            self.pending.pop(name, None)
            return
        # A new generation beside the committed one (a rewrite of `last.pt`): readers keep seeing the
        # old one until this manifest exists; the old one is removed only after LATEST moved on.
        seq = self.next_seq
        prefix = ckpt_gen_prefix(self.run_id, name, seq)
        files = []
        total = 0
        try:
            for rel in rels:
                src = os.path.join(path, rel) if is_dir else path
                fpath = rel if is_dir else name
                size, digest = self.storage.put_file(prefix + "files/" + fpath, src)
                files.append({"path": fpath, "size": size, "sha256": digest})
                total += size
            if entry_signature(path) != sig:
                raise CheckpointChanged()
        except CheckpointChanged:
            # No manifest was written, so nothing reads these. (After a storage error they stay: the
            # next try reuses this generation, and the next commit of the name removes leftovers.)
            try:
                self.storage.delete_prefix(prefix)
            except Exception:
                pass
            raise
        manifest = {
            "version": 1,
            "runId": self.run_id,
            "name": name,
            "kind": "dir" if is_dir else "file",
            "step": step_of(self.dir, name),
            "seq": seq,
            "createdAt": now_iso(),
            "hyperparamsHash": self.hp_hash,
            "files": files,
            "totalBytes": total,
        }
        self.storage.put_bytes(prefix + "manifest.json", json.dumps(manifest, separators=(",", ":")).encode("utf-8"))
        written = max(s[2] for s in sig)
        if self.latest_written is None or written >= self.latest_written or self.latest_name == name:
            self.storage.put_bytes(self.run_id + "/LATEST", name.encode("utf-8"))
            self.latest_name, self.latest_written = name, written
        self.next_seq = seq + 1
        if stored is not None:
            self.stale.setdefault(name, set()).add(stored["seq"])
        self.committed = [c for c in self.committed if c["name"] != name]
        self.committed.append({"name": name, "seq": seq, "step": manifest["step"], "files": files})
        self.known[name] = sig
        self.pending.pop(name, None)
        self.sup.events.emit(
            "checkpoint",
            name=name,
            step=manifest["step"],
            commitSeq=seq,  # `seq` is the event's own number; this is the commit's (manifest seq)
            files=len(files),
            bytes=total,
            location=self.storage.location(prefix.rstrip("/")),
            durationMs=int((time.monotonic() - t0) * 1000),
        )
        # Only now, with the new manifest and LATEST in place, the older generations go.
        try:
            self._delete_stale(name)
        except Exception as e:
            # Harmless leftovers: readers take the highest generation; the next commit retries.
            self.sup.debug("removing older generations of %s failed: %s" % (name, e))
        self._retention()

    def _delete_stale(self, name):
        """Deletes the superseded generations of `name`: their manifests first (a generation stops
        existing for readers before its bytes go), then their files."""
        seqs = sorted(self.stale.get(name) or ())
        for q in seqs:
            self.storage.delete(ckpt_gen_prefix(self.run_id, name, q) + "manifest.json")
        for q in seqs:
            self.storage.delete_prefix(ckpt_gen_prefix(self.run_id, name, q))
            self.stale[name].discard(q)
        if not self.stale.get(name):
            self.stale.pop(name, None)

    def _retention(self):
        if self.keep is None:
            return
        while len(self.committed) > self.keep:
            # The oldest commit, never the one LATEST names (it may have been committed before a
            # checkpoint the trainer wrote earlier): LATEST never names a pruned checkpoint.
            old = next(c for c in self.committed if c["name"] != self.latest_name)
            try:
                # Every manifest of the name first, then everything under it.
                for q in sorted(self.stale.get(old["name"]) or ()) + [old["seq"]]:
                    self.storage.delete(ckpt_gen_prefix(self.run_id, old["name"], q) + "manifest.json")
                self.storage.delete_prefix(ckpt_name_prefix(self.run_id, old["name"]))
                self.stale.pop(old["name"], None)
            except Exception as e:
                self.sup.events.emit("warning", message="retention could not delete checkpoint %s: %s" % (old["name"], e))
                return
            self.committed.remove(old)


def _read_manifest(storage, key, name, seq):
    raw = storage.get_bytes(key)
    try:
        m = json.loads(raw.decode("utf-8")) if raw is not None else None
    except ValueError:
        m = None
    if isinstance(m, dict) and m.get("name") == name and m.get("seq") == seq:
        return m
    return None


def list_manifests(storage, run_id, name=None, gens_out=None):
    """The committed checkpoints of a run (of one name if given): per name, the manifest of its highest
    generation that has a readable one (`<run>/checkpoints/<name>/<gen>/manifest.json`). A generation
    without a manifest is an upload in progress or abandoned: it does not exist for readers.
    gens_out (a dict), if given, gets name -> every generation seq found, with a manifest or not."""
    prefix = ckpt_name_prefix(run_id, name) if name is not None else "%s/checkpoints/" % run_id
    base = "%s/checkpoints/" % run_id
    gens = {}  # name -> [seq]
    for key in storage.list(prefix):
        parts = key[len(base):].split("/")
        g = GEN_RE.match(parts[1]) if len(parts) >= 3 else None
        if g is None or (name is not None and parts[0] != name):
            continue
        if gens_out is not None:
            gens_out.setdefault(parts[0], set()).add(int(g.group(1)))
        if len(parts) != 3 or parts[2] != "manifest.json":
            continue
        gens.setdefault(parts[0], []).append(int(g.group(1)))
    out = []
    for n, seqs in gens.items():
        for seq in sorted(seqs, reverse=True):
            m = _read_manifest(storage, ckpt_gen_prefix(run_id, n, seq) + "manifest.json", n, seq)
            if m is not None:
                out.append(m)
                break
    return out


def restore_checkpoint(storage, from_run, manifest, ckpt_dir):
    """Download one checkpoint into ckpt_dir/<name>, verifying every sha256; returns its path."""
    name = manifest.get("name")
    kind = manifest.get("kind")
    files = manifest.get("files")
    seq = manifest.get("seq")
    if not isinstance(name, str) or safe_rel(name) != name or "/" in name or kind not in ("file", "dir") or not isinstance(files, list) or not files \
            or not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise CheckpointCorrupt("checkpoint %r has an invalid manifest" % (name,))
    if kind == "file" and (len(files) != 1 or files[0].get("path") != name):
        raise CheckpointCorrupt("checkpoint %s has an invalid manifest (file kind)" % name)
    os.makedirs(ckpt_dir, exist_ok=True)
    staging = os.path.join(ckpt_dir, ".runctl-restore-%s-%s" % (name, secrets.token_hex(4)))
    os.makedirs(staging)
    try:
        for f in files:
            rel = safe_rel(f.get("path"))
            if rel is None:
                raise CheckpointCorrupt("checkpoint %s lists an unsafe path %r" % (name, f.get("path")))
            dest = os.path.join(staging, *rel.split("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            gen = ckpt_gen_prefix(from_run, name, manifest.get("seq"))
            key = gen + "files/" + rel
            size = f.get("size") if isinstance(f.get("size"), int) else None
            got = storage.get_file(key, dest, size) if storage.kind == "s3" else storage.get_file(key, dest)
            if got is None:
                raise CheckpointMissing("checkpoint %s is corrupt: %s is missing" % (name, rel), gen + "manifest.json")
            if got[0] != f.get("size") or got[1] != f.get("sha256"):
                raise CheckpointCorrupt(
                    "checkpoint %s is corrupt: %s has sha256 %s (size %d), manifest says %s (size %s)"
                    % (name, rel, got[1], got[0], f.get("sha256"), f.get("size"))
                )
        target = os.path.join(ckpt_dir, name)
        if os.path.lexists(target):
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            else:
                os.unlink(target)
        if kind == "dir":
            os.rename(staging, target)
        else:
            os.rename(os.path.join(staging, name), target)
            os.rmdir(staging)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# the supervisor daemon


class PhaseFailed(Exception):
    def __init__(self, code, message, reason, output_tail=None):
        Exception.__init__(self, message)
        self.code = code
        self.message = message
        self.reason = reason
        self.output_tail = output_tail


class Aborted(Exception):
    pass


EVENT_MAX_BYTES = 15000  # every events.jsonl line is shorter, so an event frame fits one bounded follow call
EVENT_FIELD_MAX = 8192  # a longer string field keeps its head and tail around a marker
EVENT_CORE_FIELDS = ("seq", "time", "type", "logOffset")


def _cut_text(text, limit):
    """text cut in the middle with a marker, so its JSON form (ASCII escapes) fits in limit bytes."""
    n = len(text)
    keep = min(limit, n)
    while True:
        half = keep // 2
        cut = "%s\n...[runctl: %d characters cut]...\n%s" % (text[:half], n - 2 * half, text[n - half:] if half else "")
        if len(json.dumps(cut)) <= limit or keep == 0:
            return cut
        keep //= 2


def bounded_event_json(ev):
    """The event's JSON line, shorter than EVENT_MAX_BYTES: long strings are cut in the middle (head
    and tail kept, with a marker), the biggest first, and a big non-string value is replaced by a
    marker; `truncated` lists the fields changed. Readers take lines of up to 1 MiB, far above."""
    line = json.dumps(ev, separators=(",", ":"))  # ensure_ascii: its length is its size in bytes
    if len(line) < EVENT_MAX_BYTES:
        return line
    ev = dict(ev)
    cut = []
    for k, v in list(ev.items()):
        if k not in EVENT_CORE_FIELDS and isinstance(v, str) and len(json.dumps(v)) > EVENT_FIELD_MAX:
            ev[k] = _cut_text(v, EVENT_FIELD_MAX)
            cut.append(k)
    while True:
        ev["truncated"] = cut
        line = json.dumps(ev, separators=(",", ":"))
        if len(line) < EVENT_MAX_BYTES:
            return line
        size, k = max((len(json.dumps(v)), k) for k, v in ev.items() if k not in EVENT_CORE_FIELDS + ("truncated",))
        v = ev[k]
        if isinstance(v, str) and size > 512:
            ev[k] = _cut_text(v, size // 2)
        elif size < 200:
            del ev[k]  # a marker would be no shorter (an event of very many small fields)
        else:
            ev[k] = "[runctl: a value of %d bytes was dropped: events are bounded to %d bytes]" % (size, EVENT_MAX_BYTES)
        if k not in cut:
            cut.append(k)


class EventLog:
    def __init__(self, path, log_path=None, redact=None):
        # Each event records how long train.log was when it happened, so a follower can put log
        # lines and events back in their true order.
        self.log_path = log_path
        self.redact = redact  # str -> str: takes secret values out of every string field
        self.lock = threading.Lock()
        self.seq = 0
        try:
            with open(path, "rb") as f:
                self.seq = sum(1 for line in f if line.strip())
        except OSError:
            pass
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def emit(self, type_, **fields):
        with self.lock:
            self.seq += 1
            ev = {"seq": self.seq, "time": now_iso(), "type": type_}
            if self.log_path is not None:
                try:
                    ev["logOffset"] = os.path.getsize(self.log_path)
                except OSError:
                    ev["logOffset"] = 0
            for k, v in fields.items():
                if k not in ("seq", "time", "type", "logOffset"):  # these belong to the event itself
                    ev[k] = self.redact(v) if self.redact is not None and isinstance(v, str) else v
            line = (bounded_event_json(ev) + "\n").encode("utf-8")
            # One write on an O_APPEND fd: a reader never sees two events interleaved.
            os.write(self.fd, line)
            if type_ == "exit":
                os.fsync(self.fd)
            return ev


# ---------------------------------------------------------------------------------------------
# process supervision: every process of a run carries the run's token in its environment, so the
# agent (and, once it is gone, its watcher or the client's `reap`) can find and end all of them,
# including ones that left the trainer's process group (setsid, double fork).

TOKEN_ENV = "RUNCTL_SUPERVISION_TOKEN"
SUPERVISION_FILE = "supervision.json"
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper():
    """Makes this process a child subreaper (Linux >= 3.4): orphaned descendants are reparented to it
    rather than to init, so they stay findable and reapable. False where unavailable (macOS)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except Exception:
        return False


def proc_stat(pid):
    """(ppid, pgid, start time in clock ticks since boot, state letter) from /proc, or None."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rfind(b")") + 2:].split()
    try:
        return int(rest[1]), int(rest[2]), int(rest[19]), rest[0].decode("ascii", "replace")
    except (IndexError, ValueError):
        return None


def carries_token(pid, token):
    """Whether the process's environment holds the run's token (False for zombies, other users)."""
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            env = f.read()
    except OSError:
        return False
    return (b"\0%s=%s\0" % (TOKEN_ENV.encode(), token.encode())) in b"\0" + env + b"\0"


def all_pids():
    try:
        return [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return []


def run_processes(token, exclude=()):
    """Live processes of the run (those carrying its token), this process and `exclude` left out."""
    me = os.getpid()
    out = []
    for pid in all_pids():
        if pid == me or pid in exclude:
            continue
        if carries_token(pid, token):
            st = proc_stat(pid)
            if st is not None and st[3] not in ("Z", "X"):
                out.append(pid)
    return out


def kill_group_verified(info, token):
    """SIGKILLs the recorded child's process group, but only while it is still this run's: its
    leader has the recorded start time, or (the leader gone) a member carries the run's token. A
    pgid is never a new pid while any process is in that group, so a verified group is ours."""
    pgid = info.get("pgid") if isinstance(info, dict) else None
    if not isinstance(pgid, int) or pgid <= 1:
        return False
    st = proc_stat(pgid)
    ours = st is not None and st[2] == info.get("startTicks") and st[3] not in ("Z", "X")
    if not ours:
        # Without /proc (macOS) nothing can verify it and the group is left alone.
        ours = any(carries_token(p, token) for p in all_pids() if (proc_stat(p) or (0, 0))[1] == pgid)
    if not ours:
        return False
    try:
        os.killpg(pgid, signal.SIGKILL)
        return True
    except OSError:
        return False


def kill_run_processes(token, exclude=(), rounds=100):
    """SIGKILLs every process of the run until none is left (a fork that races one round is found by
    the next). Returns the pids it killed."""
    killed = set()
    for _ in range(rounds):
        pids = run_processes(token, exclude)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except OSError:
                pass
        time.sleep(0.01)
    return killed


def reap_run(run_dir, token=None):
    """Ends every process of a run whose agent is gone (the watcher's and the client's cleanup):
    the recorded child's process group (verified, see kill_group_verified), then every process
    carrying the run's token. token: the watcher's own (SUPERVISION_FILE may be a newer run's by
    then). Returns how many processes (or groups) it killed."""
    try:
        info = read_json_file(os.path.join(run_dir, SUPERVISION_FILE))
    except (OSError, ValueError):
        info = None
    if not isinstance(info, dict) or not isinstance(info.get("token"), str) or (token is not None and info["token"] != token):
        info = None
    token = token if token is not None else (info or {}).get("token")
    if not token:
        return 0
    killed = 1 if info is not None and kill_group_verified(info.get("child"), token) else 0
    return killed + len(kill_run_processes(token))


def cmd_watch(run_dir):
    """The watcher (started by the agent in its own session): blocks on a pipe whose only writer is
    the agent; end of file means the agent is gone (exited, or SIGKILLed), and then every process of
    the run is ended, so no trainer ever outlives its supervisor."""
    got = b""
    try:
        while True:
            b = os.read(0, 4096)
            if not b:
                break
            if len(got) < 200:
                got += b
    except OSError:
        pass
    token = got.split(b"\n", 1)[0].decode("ascii", "replace").strip()
    if token:
        reap_run(run_dir, token)
    return EXIT_OK


def cmd_reap(run_dir):
    if not os.path.isdir(run_dir):
        print_json({"error": "no such run directory: %s" % run_dir})
        return EXIT_NO_RUN
    if agent_alive(run_dir):
        print_json({"killed": 0, "agentAlive": True})
        return EXIT_OK
    print_json({"killed": reap_run(run_dir), "agentAlive": False})
    return EXIT_OK


def _num(v, default, name, allow_none=False):
    if v is None:
        if allow_none:
            return None
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise UsageError("spec.%s must be a non-negative number%s" % (name, " or null" if allow_none else ""))
    return int(v)


def normalize_spec(spec, run_dir):
    """Fill defaults and check types; raises UsageError with a readable message."""
    if not isinstance(spec, dict):
        raise UsageError("spec must be a JSON object")
    s = dict(spec)
    run_dir = os.path.abspath(run_dir)
    s["runId"] = s.get("runId") or os.path.basename(run_dir)
    s["runDir"] = run_dir
    if not isinstance(s["runId"], str) or safe_rel(s["runId"]) != s["runId"] or "/" in s["runId"]:
        raise UsageError("spec.runId must be a plain name")
    workdir = s.get("workdir") or os.path.join(run_dir, "code")
    if not isinstance(workdir, str):
        raise UsageError("spec.workdir must be a path")
    s["workdir"] = os.path.join(run_dir, workdir) if not os.path.isabs(workdir) else workdir
    wd = s["workdir"]

    def path_in(v, name):
        if v is None:
            return None
        if not isinstance(v, str) or not v:
            raise UsageError("spec.%s must be a path" % name)
        return v if os.path.isabs(v) else os.path.join(wd, v)

    argv = s.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise UsageError("spec.argv must be a non-empty list of strings (script first)")
    if argv[0].startswith("-"):
        # The interpreter would read "-V.py" as its own option: name the script as a path.
        argv = ["./" + argv[0]] + argv[1:]
    s["argv"] = argv
    s["python"] = s.get("python") or "python3"
    env = s.get("env") or {}
    if not isinstance(env, dict):
        raise UsageError("spec.env must be an object")
    s["env"] = env
    s["hyperparams"] = s.get("hyperparams") if s.get("hyperparams") is not None else {}
    s["mirrorDir"] = path_in(s.get("mirrorDir"), "mirrorDir")
    setup = s.get("setup")
    if setup is not None:
        if not isinstance(setup, dict):
            raise UsageError("spec.setup must be an object or null")
        setup = dict(setup)
        pip = dict(setup.get("pip") or {})
        pip["findLinks"] = list(pip.get("findLinks") or [])
        pip["noIndex"] = bool(pip.get("noIndex"))
        pip["indexUrl"] = pip.get("indexUrl") or None
        pip["extraArgs"] = [str(a) for a in (pip.get("extraArgs") or [])]
        setup["pip"] = pip
        setup["systemSitePackages"] = bool(setup.get("systemSitePackages"))
        cmds = setup.get("commands") or []
        if not isinstance(cmds, list) or not all(isinstance(c, str) for c in cmds):
            raise UsageError("spec.setup.commands must be a list of strings")
        setup["commands"] = cmds
        setup["venvRoot"] = setup.get("venvRoot") or os.path.join(os.path.dirname(os.path.dirname(run_dir)), "venvs")
        if not os.path.isabs(setup["venvRoot"]):
            raise UsageError("spec.setup.venvRoot must be absolute")
    s["setup"] = setup
    data = s.get("data") or []
    if not isinstance(data, list):
        raise UsageError("spec.data must be a list")
    norm = []
    for d in data:
        if not isinstance(d, dict) or not isinstance(d.get("source"), dict) or not isinstance(d.get("to"), str):
            raise UsageError("spec.data entries need source and to")
        norm.append({"source": d["source"], "to": path_in(d["to"], "data[].to")})
    s["data"] = norm
    s["dataDir"] = path_in(s.get("dataDir"), "dataDir")
    s["outputDir"] = path_in(s.get("outputDir"), "outputDir") or os.path.join(run_dir, "outputs")
    ck = dict(s.get("checkpoints") or {})
    ck["dir"] = path_in(ck.get("dir"), "checkpoints.dir") or os.path.join(run_dir, "checkpoints")
    ck["storage"] = ck.get("storage")
    ck["keep"] = _num(ck.get("keep"), None, "checkpoints.keep", allow_none=True)
    ck["settleMs"] = _num(ck.get("settleMs"), 2000, "checkpoints.settleMs")
    ck["pollMs"] = _num(ck.get("pollMs"), 500, "checkpoints.pollMs")
    s["checkpoints"] = ck
    resume = s.get("resume")
    if resume is not None and (not isinstance(resume, dict) or not isinstance(resume.get("runId"), str)):
        raise UsageError("spec.resume needs storage and runId")
    s["resume"] = resume
    lim = dict(s.get("limits") or {})
    lim["maxDurationMs"] = _num(lim.get("maxDurationMs"), None, "limits.maxDurationMs", allow_none=True)
    lim["graceMs"] = _num(lim.get("graceMs"), 30000, "limits.graceMs")
    budget = lim.get("budget")
    if budget is not None:
        if not isinstance(budget, dict):
            raise UsageError("spec.limits.budget must be null or {maxUsd, hourlyUsd, spentUsd}")
        money = {}
        for key in ("maxUsd", "hourlyUsd", "spentUsd"):
            v = budget.get(key, 0)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise UsageError("spec.limits.budget.%s must be a non-negative number" % key)
            money[key] = float(v)
        budget = money
    lim["budget"] = budget
    s["limits"] = lim
    shutdown = s.get("shutdown")
    if shutdown is not None:
        cmd = shutdown.get("command") if isinstance(shutdown, dict) else None
        if not isinstance(cmd, list) or not cmd or not all(isinstance(c, str) for c in cmd):
            raise UsageError("spec.shutdown must be null or {command: [argv], afterRunMs}")
        cancel = shutdown.get("cancelBootPowerOff")
        if cancel is not None and (not isinstance(cancel, list) or not cancel or not all(isinstance(c, str) for c in cancel)):
            raise UsageError("spec.shutdown.cancelBootPowerOff must be absent or [argv]")
        shutdown = {"command": cmd, "afterRunMs": _num(shutdown.get("afterRunMs"), 0, "shutdown.afterRunMs"), "cancelBootPowerOff": cancel}
    s["shutdown"] = shutdown
    outputs = s.get("outputs")
    if outputs is not None and (not isinstance(outputs, dict) or not isinstance(outputs.get("storage"), dict)):
        raise UsageError("spec.outputs must be null or {\"storage\": descriptor}")
    s["outputs"] = outputs
    s["interruption"] = normalize_interruption(s.get("interruption"))
    return s


def normalize_interruption(v):
    """spec.interruption: null (polling off) or the settings of the spot-notice poller, defaults filled."""
    if v is None:
        return None
    if not isinstance(v, dict):
        raise UsageError("spec.interruption must be an object or null")
    out = dict(v)
    endpoint = v.get("imdsEndpoint") or IMDS_ENDPOINT
    if not isinstance(endpoint, str) or not re.match(r"^https?://[^/\s]+/*$", endpoint):
        raise UsageError("spec.interruption.imdsEndpoint must be an http:// URL without a path")
    out["imdsEndpoint"] = endpoint.rstrip("/")
    out["pollMs"] = _num(v.get("pollMs"), 5000, "interruption.pollMs")
    out["noticeWindowMs"] = _num(v.get("noticeWindowMs"), 120000, "interruption.noticeWindowMs")
    out["reserveMs"] = _num(v.get("reserveMs"), 20000, "interruption.reserveMs")
    sig = v.get("signal") or "SIGTERM"
    if not isinstance(sig, str):
        raise UsageError("spec.interruption.signal must be a signal name such as SIGTERM")
    sig = sig.upper()
    if not sig.startswith("SIG"):
        sig = "SIG" + sig
    if sig.startswith("SIG_") or not isinstance(getattr(signal, sig, None), signal.Signals):
        raise UsageError("spec.interruption.signal: unknown signal %s" % v.get("signal"))
    out["signal"] = sig
    return out


def check_launch_secrets(obj):
    """The `secrets` of a launch spec: null or {"aws": {accessKeyId, secretAccessKey, sessionToken?}}.
    Error messages never quote the values."""
    if obj is None:
        return None
    if not isinstance(obj, dict) or set(obj) - {"aws"}:
        raise UsageError("spec.secrets must be an object with only an `aws` entry")
    aws = obj.get("aws")
    if aws is None:
        return {}
    if not isinstance(aws, dict) or not isinstance(aws.get("accessKeyId"), str) or not aws.get("accessKeyId") \
            or not isinstance(aws.get("secretAccessKey"), str) or not aws.get("secretAccessKey") \
            or not isinstance(aws.get("sessionToken"), (str, type(None))):
        raise UsageError("spec.secrets.aws needs accessKeyId and secretAccessKey strings (and an optional sessionToken)")
    return {"aws": {"accessKeyId": aws["accessKeyId"], "secretAccessKey": aws["secretAccessKey"],
                    "sessionToken": aws.get("sessionToken") or None}}


# ---------------------------------------------------------------------------------------------
# spot interruptions (EC2 instance metadata, IMDSv2)


_ISO_RE = re.compile(
    r"^\s*(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d)(?::(\d\d)(\.\d+)?)?\s*(Z|z|[+-]\d\d(?::?\d\d)?)?\s*$"
)


def parse_iso_utc(text):
    """Epoch seconds of an ISO 8601 time such as 2026-11-21T16:45:00Z (no zone: UTC); None if not one."""
    m = _ISO_RE.match(text) if isinstance(text, str) else None
    if not m:
        return None
    try:
        t = datetime.datetime(
            int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5)), int(m.group(6) or 0),
            tzinfo=datetime.timezone.utc,
        ).timestamp()
    except ValueError:
        return None
    zone = m.group(8)
    if zone and zone not in ("Z", "z"):
        digits = zone[1:].replace(":", "")
        offset = int(digits[:2]) * 3600 + (int(digits[2:4]) * 60 if len(digits) >= 4 else 0)
        t -= offset if zone[0] == "+" else -offset
    return t + (float(m.group(7)) if m.group(7) else 0.0)


def iso_of_epoch(t):
    dt = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (dt.microsecond // 1000)


class ImdsUnreachable(Exception):
    """Nothing answered (connection refused, timeout, no route): not an EC2 instance."""


class ImdsHttpError(Exception):
    """The metadata service answered, but not with what a poll needs."""


class InterruptionPoller:
    """Polls IMDSv2 for a spot interruption notice and a rebalance recommendation (docs/agent-protocol.md).

    Runs in its own thread from the start of the run. It only records: the first notice goes to
    Supervisor.on_interruption_notice, and the main thread acts on it (signals are sent there only).
    """

    def __init__(self, sup, cfg):
        import urllib.request  # here, not at the top: every other agent command starts faster without it

        self.sup = sup
        self.base = cfg["imdsEndpoint"]
        self.poll_s = max(50, cfg["pollMs"]) / 1000.0
        # Never through a proxy from the environment: the metadata service is link-local.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.token = None
        self.token_renew_at = 0.0
        self.answered = False  # the service has answered at least once
        self.rebalance_seen = False
        self.http_warned = False
        self.stop_event = threading.Event()
        self.thread = None

    def start(self):
        self.thread = threading.Thread(target=self._loop, name="imds-poller", daemon=True)
        self.thread.start()

    def stop(self):
        self.stop_event.set()

    def _request(self, method, path, headers):
        """(status, body, headers) of one request with a short timeout; ImdsUnreachable when nothing answered."""
        import http.client
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.base + path, data=b"" if method == "PUT" else None, headers=headers, method=method)
        try:
            with self.opener.open(req, timeout=IMDS_TIMEOUT_S) as resp:
                status, body, hdrs = resp.status, resp.read(65536), resp.headers
        except urllib.error.HTTPError as e:
            status, hdrs = e.code, e.headers
            try:
                body = e.read(65536)
            except Exception:
                body = b""
            e.close()
        except urllib.error.URLError as e:
            raise ImdsUnreachable(str(e.reason))
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise ImdsUnreachable("%s: %s" % (type(e).__name__, e) if str(e) else type(e).__name__)
        self.answered = True
        return status, body, hdrs

    def _token(self):
        if self.token is not None and time.monotonic() < self.token_renew_at:
            return self.token
        self.token = None
        status, body, hdrs = self._request(
            "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": str(IMDS_TOKEN_TTL_S)}
        )
        token = body.decode("ascii", "replace").strip()
        if status != 200 or not token:
            raise ImdsHttpError("the token request (PUT /latest/api/token) answered HTTP %d" % status)
        ttl = IMDS_TOKEN_TTL_S
        try:
            ttl = max(1, min(ttl, int(hdrs.get("X-aws-ec2-metadata-token-ttl-seconds") or ttl)))
        except (TypeError, ValueError):
            pass
        # Renewed a little before it expires: a minute early, or a tenth of a short TTL.
        self.token = token
        self.token_renew_at = time.monotonic() + ttl - min(60.0, ttl / 10.0)
        return token

    def _get(self, path):
        """(status, body) of a GET with the session token; a 401 renews the token once."""
        for attempt in (0, 1):
            status, body, _hdrs = self._request("GET", path, {"X-aws-ec2-metadata-token": self._token()})
            if status == 401 and attempt == 0:
                self.token = None
                continue
            return status, body
        return status, body

    @staticmethod
    def _json(body):
        try:
            obj = json.loads(body.decode("utf-8"))
        except ValueError:
            return None
        return obj if isinstance(obj, dict) else None

    def poll_once(self):
        """One poll; False once there is nothing left to watch for (a notice was seen)."""
        if not self.rebalance_seen:
            path = "/latest/meta-data/events/recommendations/rebalance"
            status, body = self._get(path)
            if status == 200:
                obj = self._json(body) or {}
                self.rebalance_seen = True
                t = parse_iso_utc(obj.get("noticeTime"))
                self.sup.poller_emit("rebalance-recommendation", noticeTime=iso_of_epoch(t) if t is not None else None)
            elif status != 404:
                self.sup.debug("GET %s answered HTTP %d" % (path, status))
        path = "/latest/meta-data/spot/instance-action"
        status, body = self._get(path)
        if status == 200:
            notice = self._json(body)
            if notice is not None:
                self.sup.on_interruption_notice(notice)
                return False
            self.sup.debug("GET %s answered an unreadable notice: %r" % (path, body[:200]))
        elif status != 404:
            self.sup.debug("GET %s answered HTTP %d" % (path, status))
        return True

    def _loop(self):
        while not self.stop_event.is_set():
            try:
                if not self.poll_once():
                    return
            except ImdsUnreachable as e:
                if not self.answered:
                    self.sup.poller_emit(
                        "warning",
                        message="the instance metadata service at %s does not answer (%s): spot interruption notices"
                        " are not watched for in this run" % (self.base, e),
                    )
                    return
                self.sup.debug("instance metadata poll failed: %s" % e)
            except ImdsHttpError as e:
                if not self.http_warned:
                    self.http_warned = True
                    self.sup.poller_emit("warning", message="instance metadata at %s: %s; retrying every poll" % (self.base, e))
                else:
                    self.sup.debug("instance metadata poll failed: %s" % e)
            except Exception:
                self.sup.debug("instance metadata poll failed:\n" + traceback.format_exc())
            self.stop_event.wait(self.poll_s)


class Supervisor:
    def __init__(self, run_dir, machine_secrets=None):
        self.run_dir = os.path.abspath(run_dir)
        # Launch secrets live only in this process's memory: handed to boto3 sessions or to the
        # environment of aws subprocesses, never to files, events, the trainer or os.environ.
        self.aws_creds = (machine_secrets or {}).get("aws")
        self.secret_values = sorted(
            (v for v in (self.aws_creds or {}).values() if isinstance(v, str) and len(v) >= 4), key=len, reverse=True
        )
        self.t0 = time.monotonic()
        self.phase = "starting"
        self.trainer_pid = None
        self.child_pgid = None  # process group of whatever child runs now (setup step or trainer)
        self.pending_signals = []  # filled by signal handlers, drained by the main thread only
        self.abort_reason = None  # cancel | kill | max-duration | budget | interruption
        self.term_deadline = None
        self.kill_sent = False
        self.trainer_done = False
        self.stop_commits = False
        self.interruption = None  # the first spot notice: see on_interruption_notice
        self.intr_lock = threading.Lock()
        self.intr_closed = False  # set just before the exit event: the poller records nothing after it
        self.poller = None
        self.status_lock = threading.Lock()
        self.hb_stop = threading.Event()
        self.events = None
        self.watcher = None
        self.early_watcher = None  # made (and its storage listed) before the data phase, started with training
        self.trainer_rc = None  # the trainer's wait status (negative: killed by that signal) once it ended
        self.venv = None
        self.ckpt_storage = None
        self.out_storage = None
        self.resume_storage = None
        self.data_storages = {}
        self.spec = {"limits": {"graceMs": 0, "maxDurationMs": None}}  # until spec.json is read
        # Supervision (see reap_run): the token marks every process of this run; adopted holds the
        # orphans of the run reparented to this subreaper, reaped by pid (never waitpid(-1), which
        # would steal the status of the agent's own subprocesses).
        self.token = secrets.token_hex(16)
        self.subreaper = False
        self.adopted = set()
        self.watcher_pid = None
        self.watch_fd = None
        self.not_adopted = set()  # children seen without the token (the agent's own, e.g. the aws CLI)
        self.children_files = True  # /proc/PID/task/TID/children exists (CONFIG_PROC_CHILDREN)
        self.last_full_scan = 0.0

    # -- plumbing

    def redact(self, text):
        for v in self.secret_values:
            if v in text:
                text = text.replace(v, "***")
        return text

    def debug(self, msg):
        try:
            sys.stderr.write("[%s] %s\n" % (now_iso(), self.redact(msg)))
            sys.stderr.flush()
        except Exception:
            pass

    def path(self, name):
        return os.path.join(self.run_dir, name)

    def log_note(self, text):
        """A line of the agent's own in train.log, so setup steps are readable next to their output."""
        os.write(self.log_fd, ("[runctl] %s\n" % self.redact(text)).encode("utf-8", "replace"))

    def write_status(self):
        with self.status_lock:
            st = {
                "phase": self.phase,
                "agentPid": os.getpid(),
                "trainerPid": self.trainer_pid,
                "heartbeatMs": now_ms(),
            }
            try:
                atomic_write(self.path("status.json"), json.dumps(st).encode("utf-8"))
            except OSError:
                self.debug("status.json write failed:\n" + traceback.format_exc())

    def set_phase(self, phase, emit=True):
        self.phase = phase
        if emit:
            self.events.emit("phase", phase=phase)
        self.write_status()

    def _heartbeat(self):
        while not self.hb_stop.wait(1.0):
            self.write_status()

    def elapsed_ms(self):
        return int((time.monotonic() - self.t0) * 1000)

    # -- signals and limits (sending happens on the main thread only, never in a handler)

    def _on_signal(self, signum, _frame):
        self.pending_signals.append("kill" if signum == signal.SIGUSR1 else "cancel")

    def poll_abort(self):
        while self.pending_signals:
            self._request(self.pending_signals.pop(0))
        max_ms = self.spec["limits"].get("maxDurationMs")
        if max_ms is not None and self.abort_reason is None and not self.trainer_done and self.elapsed_ms() >= max_ms:
            self._request("max-duration")
        budget = self.spec["limits"].get("budget")
        if budget and budget["hourlyUsd"] > 0 and self.abort_reason is None and not self.trainer_done:
            # The machine's own clock keeps the budget even when no client is watching.
            allowed_ms = (budget["maxUsd"] - budget["spentUsd"]) / budget["hourlyUsd"] * 3600000.0
            if self.elapsed_ms() >= allowed_ms:
                self._request("budget")
        intr = self.interruption
        if intr is not None and not intr["acted"]:
            self._act_on_interruption(intr)
        if self.term_deadline is not None and not self.kill_sent and time.monotonic() >= self.term_deadline:
            if self.abort_reason == "interruption":
                self._interruption_deadline()
            else:
                self._send(signal.SIGKILL, self.abort_reason)

    def _request(self, what):
        if self.trainer_done:
            # The trainer has ended; only a kill matters now: it stops the final commits.
            self.debug("%s requested after the trainer exited" % what)
            if what == "kill":
                self.stop_commits = True
            return
        if what == "kill":
            if self.kill_sent:
                return
            if self.abort_reason != "interruption":  # a kill cuts a flush short but does not hide the notice
                self.abort_reason = "kill"
            self._send(signal.SIGKILL, "kill")
            return
        if self.abort_reason is not None:
            return  # already stopping
        self.abort_reason = what
        self.term_deadline = time.monotonic() + self.spec["limits"]["graceMs"] / 1000.0
        self._send(signal.SIGTERM, what)

    def _send(self, sig, reason):
        self.events.emit("signal", signal=signal_name(sig), reason=reason)
        if sig == signal.SIGKILL:
            self.kill_sent = True
        pg = self.child_pgid
        if pg:
            try:
                os.killpg(pg, sig)
            except OSError:
                pass

    def cancel_boot_power_off(self):
        """A machine launched with a boot-time power-off (the backstop for a client that died between
        launch and this agent's start; on EC2 `shutdown -h +N` from the user data) stays up now that
        the agent supervises the run: runs spec.shutdown.cancelBootPowerOff once, only when the spec
        has it. A failure is a warning: the machine would power off mid-run."""
        sd = self.spec.get("shutdown")
        cmd = sd.get("cancelBootPowerOff") if sd else None
        if not cmd:
            return
        try:
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
            problem = None if r.returncode == 0 else "exit %d: %s" % (r.returncode, r.stderr.decode("utf-8", "replace").strip()[-500:])
        except (OSError, subprocess.SubprocessError) as e:
            problem = str(e)
        if problem is not None:
            self.events.emit("warning", message="could not cancel the machine's boot-time power-off (%s): it may power off during the run" % problem)

    def schedule_shutdown(self, reason):
        """Powers the machine off after the run (spec.shutdown; on EC2 that terminates it): at once
        (after a minute for the client to read the end) when a time or budget limit ended the run,
        else after afterRunMs unless the client releases the machine first. The backstop for a
        client that died: a finished run never bills on for a weekend."""
        sd = self.spec.get("shutdown")
        if not sd:
            return
        delay_ms = min(60000, sd["afterRunMs"] or 60000) if reason in ("max-duration", "budget") else sd["afterRunMs"]
        if not delay_ms:
            return
        try:
            subprocess.Popen(
                ["sh", "-c", 'sleep "$1"; shift; exec "$@"', "sh", str(int(delay_ms // 1000))] + list(sd["command"]),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )
            self.events.emit("shutdown-scheduled", inMs=int(delay_ms), reason=reason, command=sd["command"])
        except OSError as e:
            self.events.emit("warning", message="could not schedule the machine's shutdown: %s" % e)

    def check_abort(self):
        self.poll_abort()
        if self.abort_reason is not None:
            raise Aborted()

    # -- spot interruptions (the poller thread records; the main thread acts)

    def poller_emit(self, type_, **fields):
        with self.intr_lock:
            if not self.intr_closed:
                self.events.emit(type_, **fields)

    def on_interruption_notice(self, notice):
        """Poller thread: the first spot/instance-action notice. Records it; the main thread acts."""
        cfg = self.spec["interruption"]
        arrived_mono, arrived = time.monotonic(), time.time()
        when = parse_iso_utc(notice.get("time"))
        if when is not None:
            deadline = when - cfg["reserveMs"] / 1000.0
        else:
            deadline = arrived + (cfg["noticeWindowMs"] - cfg["reserveMs"]) / 1000.0
        deadline = max(deadline, arrived)  # a late notice: flush at once
        action = notice.get("action")
        with self.intr_lock:
            if self.interruption is not None or self.intr_closed:
                return
            self.events.emit(
                "interruption",
                action=action if isinstance(action, str) else None,
                noticeTime=iso_of_epoch(when) if when is not None else None,
                deadline=iso_of_epoch(deadline),
            )
            self.interruption = {
                "arrived": arrived_mono,
                "deadline": arrived_mono + (deadline - arrived),
                "acted": False,  # the main thread has seen it
                "flushing": False,  # the flush deadline has been reached
                "killed": False,  # the trainer outlived the flush deadline and was SIGKILLed
                "committed": False,  # the deadline's commit pass ran while the trainer was alive
                "handled": False,  # interruption-handled recorded
            }
        self.debug("spot interruption notice: %s" % json.dumps(notice))

    def _act_on_interruption(self, intr):
        intr["acted"] = True
        if self.trainer_done:
            return  # the trainer has already ended: its result stands; teardown goes on
        if self.abort_reason is None:
            self.abort_reason = "interruption"
            self.term_deadline = intr["deadline"]
            sig = getattr(signal, self.spec["interruption"]["signal"])
            pg = self.child_pgid
            self.debug("interruption: %s to process group %s" % (signal_name(sig), pg))
            if pg:
                try:
                    os.killpg(pg, sig)
                except OSError:
                    pass
        elif not self.kill_sent:
            # A cancel or max-duration is under way: it must be over before the machine is.
            self.term_deadline = min(self.term_deadline or intr["deadline"], intr["deadline"])

    def _trainer_running(self):
        if self.trainer_pid is None or self.trainer_done:
            return False
        waitid = getattr(os, "waitid", None)
        if waitid is None:
            return True
        try:
            return waitid(os.P_PID, self.trainer_pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            return False

    def _interruption_deadline(self):
        """Main thread, at the flush deadline: commit what is finished, record it, SIGKILL what is left."""
        intr = self.interruption
        if intr["flushing"]:
            return  # poll_abort runs again inside the commit pass
        intr["flushing"] = True
        if self._trainer_running():
            # The trainer is still alive, so a checkpoint it is still writing is not finished: only
            # entries with a .done marker or a settled signature are committed, and none after the kill.
            self._flush_commits(final=False)
            if self._trainer_running():
                intr["killed"] = intr["committed"] = True
                self._emit_handled(trainer_exited=False)
                self.debug("interruption: the trainer outlived the flush deadline; SIGKILL")
                self.kill_sent = True
                try:
                    os.killpg(self.trainer_pid, signal.SIGKILL)
                except OSError:
                    pass
            # else it exited during the pass: teardown's final pass commits the rest, as after any exit
            return
        if not self.trainer_done and self.child_pgid:
            self.kill_sent = True  # a setup step: nothing to flush
            try:
                os.killpg(self.child_pgid, signal.SIGKILL)
            except OSError:
                pass

    def _emit_handled(self, trainer_exited):
        intr = self.interruption
        if intr is None or intr["handled"]:
            return
        intr["handled"] = True
        last = self.watcher.committed[-1] if self.watcher is not None and self.watcher.committed else None
        self.events.emit(
            "interruption-handled",
            trainerExited=bool(trainer_exited),
            checkpoint=last["name"] if last else None,
            step=last.get("step") if last else None,
            flushMs=int((time.monotonic() - intr["arrived"]) * 1000),
        )

    # -- child processes

    def run_step(self, argv, label, code, reason, cwd, env, shown=None):
        """Run one setup step with output into train.log; PhaseFailed with the output's tail if it fails."""
        self.check_abort()
        start = os.fstat(self.log_fd).st_size
        self.log_note("$ " + (shown or label))
        try:
            proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=self.log_fd, stderr=self.log_fd,
                start_new_session=True, close_fds=True,
            )
        except OSError as e:
            self.log_note("%s: %s" % (label, e))
            raise PhaseFailed(code, "%s could not start: %s" % (label, e), reason, self.log_tail(start))
        self.record_child(proc.pid, "setup")
        rc = self._wait_child(proc)
        if self.abort_reason is not None:
            raise Aborted()
        if rc != 0:
            how = "exit code %d" % rc if rc >= 0 else "signal %s" % signal_name(-rc)
            self.log_note("%s failed (%s)" % (label, how))
            raise PhaseFailed(code, "%s failed (%s)" % (label, how), reason, self.log_tail(start))
        return rc

    def _wait_child(self, proc):
        """Wait for a child (its own process group), relaying cancel/kill/max-duration to the group."""
        self.child_pgid = proc.pid
        try:
            while True:
                self.poll_abort()
                rc = self._exited(proc)
                if rc is not None:
                    return rc
                if self.subreaper:
                    self.adopt_scan(proc.pid)
                time.sleep(0.05)
        except BaseException:
            # The agent itself failed: never leave the child running unsupervised.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
            self.end_run_processes()
            raise
        finally:
            self.child_pgid = None

    def _exited(self, proc):
        """The child's return code once it has exited, else None.

        Leftovers of its process group (workers, shells) are SIGKILLed before the leader is reaped:
        while the leader is an unreaped zombie its pgid cannot be reused, so killpg hits only them.
        """
        waitid = getattr(os, "waitid", None)
        if waitid is not None:
            try:
                info = waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                info = True
            if info is None:
                return None
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            if proc.pid == self.trainer_pid:
                # The trainer's end is the run's end: what it started outside its group goes too.
                self.end_run_processes()
            return proc.wait()
        rc = proc.poll()
        if rc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            if proc.pid == self.trainer_pid:
                self.end_run_processes()
        return rc

    # -- supervision of every process of the run

    def write_supervision(self, child=None):
        """supervision.json: what the watcher and the client's `reap` need once this agent is gone."""
        info = {
            "version": 1,
            "agentPid": os.getpid(),
            "watcherPid": self.watcher_pid,
            "token": self.token,
            "subreaper": self.subreaper,
            "child": child,
        }
        try:
            atomic_write(self.path(SUPERVISION_FILE), json.dumps(info).encode("utf-8"), mode=0o600)
        except OSError:
            self.debug("%s write failed:\n%s" % (SUPERVISION_FILE, traceback.format_exc()))

    def record_child(self, pid, kind):
        st = proc_stat(pid)
        self.write_supervision({"pid": pid, "pgid": pid, "startTicks": st[2] if st else None, "kind": kind})

    def start_watcher(self):
        """A process in its own session that outlives this agent by design: it holds the read end of
        a pipe only this agent writes, so end of file means the agent died (even by SIGKILL), and it
        then ends every process of the run (cmd_watch). The token goes through the pipe first, so the
        watcher of an old agent can never act on a relaunched run's processes."""
        r, w = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable or "python3", os.path.abspath(__file__), "watch", self.run_dir],
                stdin=r, stdout=subprocess.DEVNULL, start_new_session=True, close_fds=True, cwd="/",
            )
            os.write(w, (self.token + "\n").encode("ascii"))
            self.watch_fd = w  # never closed: it closes when this process ends, however it ends
            self.watcher_pid = proc.pid
        except OSError as e:
            os.close(w)
            self.debug("could not start the watcher: %s" % e)
        finally:
            os.close(r)

    def _children(self):
        """This process's children: from /proc/PID/task/TID/children, else (a kernel without
        CONFIG_PROC_CHILDREN) a scan of every process, done at most once a second."""
        me = os.getpid()
        found = set()
        if self.children_files:
            try:
                for tid in os.listdir("/proc/%d/task" % me):
                    with open("/proc/%d/task/%s/children" % (me, tid)) as f:
                        found.update(int(x) for x in f.read().split())
                return found
            except FileNotFoundError:
                self.children_files = False
            except (OSError, ValueError):
                pass
        if time.monotonic() - self.last_full_scan < 1.0:
            return None
        self.last_full_scan = time.monotonic()
        return {p for p in all_pids() if (proc_stat(p) or (0,))[0] == me}

    def adopt_scan(self, current):
        """Notes the run's orphans reparented to this subreaper (while they are alive, so their token
        is readable; each new child is looked at once) and reaps those that have exited. Cheap
        enough for every turn of the wait loop: one small read per thread of the agent."""
        children = self._children()
        if children is None:
            return
        self.not_adopted &= children
        for pid in children:
            if pid != current and pid not in self.adopted and pid not in self.not_adopted:
                if carries_token(pid, self.token):
                    self.adopted.add(pid)
                elif (proc_stat(pid) or (0, 0, 0, "Z"))[3] not in ("Z", "X"):
                    self.not_adopted.add(pid)
        self.reap_adopted(0)

    def reap_adopted(self, wait_s):
        deadline = time.monotonic() + wait_s
        while self.adopted:
            for pid in list(self.adopted):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    self.adopted.discard(pid)
            if not self.adopted or time.monotonic() >= deadline:
                return
            time.sleep(0.01)

    def end_run_processes(self):
        """SIGKILLs every process of the run still alive (daemons that left the trainer's group
        included) and reaps the ones adopted by this subreaper."""
        me = os.getpid()
        killed = kill_run_processes(self.token)
        for pid in killed:
            st = proc_stat(pid)
            if st is not None and st[0] == me:
                self.adopted.add(pid)
        self.reap_adopted(2.0)

    def log_tail(self, start):
        try:
            with open(self.path("train.log"), "rb") as f:
                f.seek(0, os.SEEK_END)
                end = f.tell()
                f.seek(max(start, end - TAIL_BYTES))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return None

    def base_env(self):
        spec = self.spec
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        for k, v in spec["env"].items():
            if v is None:
                env.pop(str(k), None)
            else:
                env[str(k)] = v if isinstance(v, str) else json.dumps(v)
        env["RUNCTL_RUN_ID"] = spec["runId"]
        env[TOKEN_ENV] = self.token
        env["RUNCTL_CHECKPOINT_DIR"] = spec["checkpoints"]["dir"]
        env["RUNCTL_OUTPUT_DIR"] = spec["outputDir"]
        env["RUNCTL_HPARAMS"] = json.dumps(spec["hyperparams"], separators=(",", ":"))
        env["RUNCTL_NODE_RANK"] = "0"
        env["RUNCTL_NUM_NODES"] = "1"
        if spec["dataDir"]:
            env["RUNCTL_DATA_DIR"] = spec["dataDir"]
        if self.venv:
            env["VIRTUAL_ENV"] = self.venv
            env["PATH"] = os.path.join(self.venv, "bin") + os.pathsep + env.get("PATH", os.defpath)
            env.pop("PYTHONHOME", None)
        return env

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
            out = subprocess.run(
                [python, "-c", "import sys; print(sys.version); print(sys.executable)"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise PhaseFailed("SETUP_FAILED", "the interpreter %r cannot be run: %s" % (python, e), "setup")
        text = out.stdout.decode("utf-8", "replace")
        if out.returncode != 0:
            raise PhaseFailed("SETUP_FAILED", "the interpreter %r failed: %s" % (python, text.strip()[-500:]), "setup", text[-TAIL_BYTES:])
        lines = text.strip().splitlines()
        return lines[0] if lines else "", os.path.realpath(lines[-1]) if lines else ""

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
        key_src = canonical_json({
            "requirements": req_text,
            "python": version,
            "executable": executable,
            "pip": {k: pip[k] for k in ("findLinks", "noIndex", "indexUrl", "extraArgs")},
            "systemSitePackages": setup["systemSitePackages"],
        })
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
                    argv = [python, "-m", "venv"] + (["--system-site-packages"] if setup["systemSitePackages"] else []) + [venv]
                    self.run_step(argv, " ".join(argv), "SETUP_FAILED", "setup", wd, None)
                    if req_path:
                        argv = [os.path.join(venv, "bin", "python"), "-m", "pip", "install", "--disable-pip-version-check"]
                        if pip["noIndex"]:
                            argv.append("--no-index")
                        for link in pip["findLinks"]:
                            argv += ["--find-links", str(link)]
                        if pip["indexUrl"]:
                            argv += ["--index-url", str(pip["indexUrl"])]
                        argv += pip["extraArgs"] + ["-r", req_path]
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

    def restore(self):
        r = self.spec["resume"]
        from_run = r["runId"]
        name = r.get("name")
        ckpt_dir = self.spec["checkpoints"]["dir"]
        storage = self.resume_storage
        try:
            self._restore(storage, from_run, name, ckpt_dir)
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
            self.check_abort()
            raise PhaseFailed("DATA_FAILED", "downloading %s to %s failed: %s" % (where, to, e), "data")
        except BaseException:
            save_state(force=True)
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

        def put(item):
            if self.stop_commits:
                raise StorageError("stopped")
            return st.put_file(base + "/" + item[0], item[1])

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
        interp = os.path.join(self.venv, "bin", "python") if self.venv else spec["python"]
        env = self.base_env()
        if self.resume_from:
            env["RUNCTL_RESUME_FROM"] = self.resume_from
        if self.early_watcher is not None:
            self.watcher = self.early_watcher
            if self.restored:
                self.watcher.mark_known(*self.restored)
            self.watcher.start()
        self.set_phase("training")
        try:
            proc = subprocess.Popen(
                [interp, "-u"] + spec["argv"], cwd=wd, env=env, stdin=subprocess.DEVNULL,
                stdout=self.log_fd, stderr=self.log_fd, start_new_session=True, close_fds=True,
            )
        except OSError as e:
            raise PhaseFailed("SETUP_FAILED", "the interpreter %s could not start: %s" % (interp, e), "setup")
        self.trainer_pid = proc.pid
        self.record_child(proc.pid, "trainer")
        self.write_status()
        try:
            return self._wait_child(proc)
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

    # -- main

    def main(self):
        fcntl_fd = os.open(self.path("agent.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + 5
        while True:
            try:
                fcntl.flock(fcntl_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                # A status probe holds it for microseconds; a second agent holds it for good.
                if time.monotonic() > deadline:
                    self.debug("another agent owns %s" % self.run_dir)
                    return EXIT_NOT_RUNNING
                time.sleep(0.02)
        self.lock_fd = fcntl_fd  # kept open (and locked) until this process ends
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.events = EventLog(self.path("events.jsonl"), self.path("train.log"), redact=self.redact)
        self.log_fd = os.open(self.path("train.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.subreaper = become_subreaper()
        self.start_watcher()
        self.write_supervision()
        atomic_write(self.path("agent.pid"), ("%d\n" % os.getpid()).encode())
        self.write_status()
        hb = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        hb.start()
        self.debug("agent %d supervising %s" % (os.getpid(), self.run_dir))

        status, reason, exit_code, sig_name = "failed", "agent", None, None
        self.resume_from = None
        self.restored = None
        try:
            try:
                self.spec = spec = normalize_spec(read_json_file(self.path("spec.json")), self.run_dir)
            except UsageError as e:
                raise PhaseFailed("AGENT_FAILED", "invalid spec.json: %s" % e, "agent")
            self.hp_hash = hashlib.sha256(canonical_json(spec["hyperparams"]).encode("utf-8")).hexdigest()
            self.cancel_boot_power_off()
            if spec["interruption"] is not None:
                self.poller = InterruptionPoller(self, spec["interruption"])
                self.poller.start()
            try:
                # Descriptors are checked now; clients are made after setup (which may install them).
                if spec["checkpoints"]["storage"] is not None:
                    check_descriptor(spec["checkpoints"]["storage"])
                if spec["resume"] is not None:
                    check_descriptor(spec["resume"].get("storage"))
                if spec["outputs"] is not None:
                    check_descriptor(spec["outputs"]["storage"])
                for item in spec["data"]:
                    if item["source"].get("kind") == "s3":
                        check_descriptor(item["source"])
            except StorageError as e:
                raise PhaseFailed("AGENT_FAILED", str(e), "agent")
            for d in (spec["workdir"], spec["outputDir"], spec["checkpoints"]["dir"]):
                os.makedirs(d, exist_ok=True)
            self.check_abort()
            self.phase_setup()
            self.check_abort()
            self.open_storages()
            self.phase_data()
            if spec["dataDir"]:
                os.makedirs(spec["dataDir"], exist_ok=True)
            rc = self.phase_training()
            if rc < 0:
                sig_name = signal_name(-rc)
            else:
                exit_code = rc
            if self.abort_reason == "interruption":
                status, reason = "interrupted", "interruption"
            elif self.abort_reason in ("cancel", "kill"):
                status, reason = "canceled", self.abort_reason
            elif self.abort_reason in ("max-duration", "budget"):
                status, reason = "failed", self.abort_reason
            else:
                status, reason = ("succeeded" if rc == 0 else "failed"), "exit"
        except Aborted:
            if self.abort_reason == "interruption":
                status = "interrupted"
            else:
                status = "canceled" if self.abort_reason in ("cancel", "kill") else "failed"
            reason = self.abort_reason
        except PhaseFailed as e:
            self.events.emit("error", code=e.code, message=e.message, outputTail=e.output_tail)
            status, reason = "failed", e.reason
        except Exception as e:
            self.debug(traceback.format_exc())
            if self.child_pgid:
                try:
                    os.killpg(self.child_pgid, signal.SIGKILL)
                except OSError:
                    pass
            self.end_run_processes()
            self.events.emit("error", code="AGENT_FAILED", message="agent error: %s: %s" % (type(e).__name__, e), outputTail=None)
            status, reason = "failed", "agent"
        self.trainer_done = True
        self.end_run_processes()  # nothing of the run outlives it (setup-step daemons included)
        if self.trainer_pid is not None or self.watcher is not None:
            self.set_phase("teardown")
            self.final_commits()
            if self.interruption is not None and self.interruption["acted"]:
                self._emit_handled(trainer_exited=self.trainer_pid is not None and not self.interruption["killed"])
            try:
                self.upload_outputs()
            except Exception as e:
                self.debug("output upload failed:\n" + traceback.format_exc())
                self.events.emit("warning", message="uploading the outputs failed: %s" % e)
        if self.poller is not None:
            self.poller.stop()
        with self.intr_lock:
            self.intr_closed = True  # nothing from the poller after this: `exit` stays the last event
        if self.interruption is not None:
            # Setup/data steps stopped by it, or a notice that came during teardown.
            self._emit_handled(trainer_exited=self.trainer_pid is not None and not self.interruption["killed"])
        if exit_code is not None:
            file_code = exit_code
        elif sig_name is not None:
            file_code = 128 + int(getattr(signal, sig_name, 0))
        else:
            file_code = 1  # the trainer never ran: a phase failed or the run was stopped before it
        try:
            atomic_write(self.path("exit_code"), ("%d\n" % file_code).encode(), fsync=True)
        except OSError:
            self.debug(traceback.format_exc())
        self.schedule_shutdown(reason)
        self.events.emit(
            "exit", status=status, exitCode=exit_code, signal=sig_name, durationMs=self.elapsed_ms(), reason=reason,
        )
        self.hb_stop.set()
        hb.join()
        self.phase = "done"
        self.write_status()
        self.debug("run ended: %s (%s)" % (status, reason))
        return EXIT_OK


SECRETS_MAX = 60000  # bytes; below a pipe's buffer, so launch writes them before forking


def read_stdin_secrets():
    """The secrets `launch` wrote into this daemon's stdin pipe; stdin becomes /dev/null after."""
    chunks = []
    while True:
        b = os.read(0, 65536)
        if not b:
            break
        chunks.append(b)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    raw = b"".join(chunks)
    try:
        obj = json.loads(raw.decode("utf-8")) if raw.strip() else None
    except ValueError:
        obj = None
    return obj if isinstance(obj, dict) else None


def cmd_supervise(run_dir, secrets_on_stdin=False):
    machine_secrets = read_stdin_secrets() if secrets_on_stdin else None
    return Supervisor(run_dir, machine_secrets).main()


# ---------------------------------------------------------------------------------------------
# launch / signal / status


STATE_FILES = ("agent.pid", "exit_code", "status.json", "events.jsonl", "train.log", SUPERVISION_FILE)


def spawn_daemon(run_dir, secrets_payload):
    """Double fork + setsid: the daemon has no controlling terminal, is not a child of the caller,
    and lives in its own session, so closing the SSH session or killing the client leaves it running.

    The daemon is a fresh interpreter (exec of `supervise`). Its stdin is a pipe that already holds
    the launch secrets (written, and the write end closed, before forking: the payload fits the pipe's
    buffer), so they reach it through no file, command line or environment."""
    agent = os.path.abspath(__file__)
    python = sys.executable or "python3"
    rfd, wfd = os.pipe()
    try:
        view = memoryview(secrets_payload)
        while view:
            view = view[os.write(wfd, view):]
    finally:
        os.close(wfd)
    try:
        pid = os.fork()
    except BaseException:
        os.close(rfd)
        raise
    if pid:
        os.close(rfd)
        os.waitpid(pid, 0)
        return
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # SIG_IGN survives exec
        devnull = os.open(os.devnull, os.O_RDWR)
        log = os.open(os.path.join(run_dir, "agent.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(rfd, 0)
        os.dup2(devnull, 1)
        os.dup2(log, 2)
        # Inherited descriptors (an SSH channel, a Node pipe) would keep the caller waiting on EOF.
        try:
            fds = [int(x) for x in os.listdir("/proc/self/fd")]
        except OSError:
            fds = range(3, 1024)
        for fd in fds:
            if fd > 2:
                try:
                    os.close(fd)
                except OSError:
                    pass
        os.chdir("/")
        os.execv(python, [python, agent, "supervise", run_dir, "--secrets-stdin"])
    except BaseException:
        try:
            os.write(2, traceback.format_exc().encode())
        finally:
            os._exit(127)


def cmd_launch(run_dir):
    raw = sys.stdin.buffer.read()
    try:
        spec = json.loads(raw.decode("utf-8"))
    except ValueError as e:
        raise UsageError("the spec on stdin is not JSON: %s" % e)
    # Secrets never reach spec.json: taken out here, handed to the daemon through a pipe.
    machine_secrets = check_launch_secrets(spec.pop("secrets", None) if isinstance(spec, dict) else None)
    secrets_payload = json.dumps(machine_secrets or {}, separators=(",", ":")).encode("utf-8")
    if len(secrets_payload) > SECRETS_MAX:
        raise UsageError("spec.secrets is too large")
    normalize_spec(spec, run_dir)  # validate before anything starts
    run_dir = os.path.abspath(run_dir)
    make_private_dir(run_dir)
    lock_fd = os.open(os.path.join(run_dir, ".launch.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        if agent_alive(run_dir):
            print_json({"error": "an agent is already running in %s" % run_dir, "pid": read_pid(run_dir)})
            return EXIT_NOT_RUNNING
        # A relaunch is a new run: stale records would end a follower at once.
        for name in STATE_FILES:
            _unlink_quiet(os.path.join(run_dir, name))
        atomic_write(os.path.join(run_dir, "spec.json"), json.dumps(spec, indent=2).encode("utf-8"))
        try:
            log_start = os.path.getsize(os.path.join(run_dir, "agent.log"))
        except OSError:
            log_start = 0
        spawn_daemon(run_dir, secrets_payload)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pid = read_pid(run_dir)
            if pid:
                print_json({"pid": pid})
                return EXIT_OK
            time.sleep(0.01)
        tail = ""
        try:
            with open(os.path.join(run_dir, "agent.log"), "rb") as f:
                f.seek(log_start)
                tail = f.read()[-2000:].decode("utf-8", "replace")
        except OSError:
            pass
        print_json({"error": "the agent did not start within 30 s", "agentLog": tail})
        return EXIT_ERROR
    finally:
        os.close(lock_fd)


def cmd_signal(run_dir, action):
    sig = {"interrupt": signal.SIGTERM, "kill": signal.SIGUSR1}.get(action)
    if sig is None:
        raise UsageError("signal action must be interrupt or kill")
    if not os.path.isdir(run_dir):
        print_json({"error": "no such run directory: %s" % run_dir})
        return EXIT_NO_RUN
    pid = read_pid(run_dir)
    if not agent_alive(run_dir) or not pid:
        print_json({"error": "no agent is running in %s" % run_dir})
        return EXIT_NOT_RUNNING
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        print_json({"error": "no agent is running in %s" % run_dir})
        return EXIT_NOT_RUNNING
    print_json({"ok": True, "pid": pid, "signal": signal_name(sig)})
    return EXIT_OK


def cmd_status(run_dir):
    if not os.path.isdir(run_dir):
        print_json({"error": "no such run directory: %s" % run_dir})
        return EXIT_NO_RUN
    st = read_json_file(os.path.join(run_dir, "status.json")) or {}
    code = None
    try:
        with open(os.path.join(run_dir, "exit_code")) as f:
            code = int(f.read().strip())
    except (OSError, ValueError):
        pass
    print_json({
        "alive": agent_alive(run_dir),
        "phase": st.get("phase"),
        "exit": exit_event(run_dir),
        "agentPid": st.get("agentPid"),
        "trainerPid": st.get("trainerPid"),
        "heartbeatMs": st.get("heartbeatMs"),
        "exitCode": code,
    })
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# follow


class Follower:
    """Streams frames from a run folder. With max_wait_ms / max_bytes (bounded mode, for transports
    that return output only when a command ends, such as SSM) it stops with a `pause` frame once
    either is reached, so the client calls again from the cursor it has."""

    # Room kept in the byte budget for the frame that ends the call (`pause` or `end`).
    CLOSING_RESERVE = len('{"k":"pause"}\n')

    def __init__(self, run_dir, log_off, ev_off, max_wait_ms=None, max_bytes=None):
        self.run_dir = run_dir
        self.log_path = os.path.join(run_dir, "train.log")
        self.ev_path = os.path.join(run_dir, "events.jsonl")
        self.log_off = log_off
        self.ev_off = ev_off
        self.sent = 0
        self.bytes_sent = 0
        self.max_bytes = max_bytes
        self.deadline = None if max_wait_ms is None else time.monotonic() + max_wait_ms / 1000.0
        self.full = False  # the byte budget is spent: the call pauses at the next chance
        # A client resuming from a cursor just past the exit event (it lost the connection, or an
        # earlier bounded call paused while draining) gets the rest of the log and `end`.
        self.exit_seen = self._exit_before(ev_off)
        self.out = sys.stdout

    def send(self, frame):
        text = json.dumps(frame, separators=(",", ":")) + "\n"
        self.out.write(text)
        self.sent += 1
        self.bytes_sent += len(text)

    def offer(self, frame):
        """Send a log or event frame if it fits the byte budget; the first always does, so every
        call makes progress. False (and nothing sent) once the budget is spent."""
        if self.max_bytes is not None:
            text = json.dumps(frame, separators=(",", ":")) + "\n"
            if self.bytes_sent > 0 and self.bytes_sent + len(text) + self.CLOSING_RESERVE > self.max_bytes:
                self.full = True
                return False
            self.out.write(text)
            self.sent += 1
            self.bytes_sent += len(text)
            return True
        self.send(frame)
        return True

    def pause(self):
        self.send({"k": "pause"})
        self.out.flush()
        return EXIT_OK

    @staticmethod
    def _read(path, off):
        try:
            with open(path, "rb") as f:
                f.seek(off)
                return f.read(FOLLOW_MAX_LINE)
        except OSError:
            return b""

    def _exit_before(self, off):
        """Whether the last complete event line before byte `off` of events.jsonl is the exit event."""
        if off <= 0:
            return False
        start = max(0, off - 65536)
        try:
            with open(self.ev_path, "rb") as f:
                f.seek(start)
                data = f.read(off - start)
        except OSError:
            return False
        if not data.endswith(b"\n"):
            return False
        try:
            ev = json.loads(data[:-1].rsplit(b"\n", 1)[-1].decode("utf-8"))
        except ValueError:
            return False
        return isinstance(ev, dict) and ev.get("type") == "exit"

    def pump_log(self, final=False, upto=None):
        """Send complete lines from log_off (not past byte `upto` when given); with final, also the
        unterminated rest. True if any."""
        any_sent = False
        # A bounded amount per poll while running, so a chatty trainer cannot starve events.
        for _ in range(1 << 30 if final or upto is not None else 16):
            if self.full:
                return any_sent
            data = self._read(self.log_path, self.log_off)
            if upto is not None:
                data = data[: max(0, upto - self.log_off)]
            if not data:
                return any_sent
            nl = data.rfind(b"\n")
            if nl >= 0:
                lines = data[:nl].split(b"\n")
            elif final or len(data) >= FOLLOW_MAX_LINE:
                lines = [data]  # the final unterminated line, or a piece of an over-long one
            else:
                return any_sent
            for line in lines:
                end = self.log_off + len(line) + (1 if nl >= 0 else 0)
                if line.endswith(b"\r"):
                    line = line[:-1]
                if not self.offer({"k": "log", "o": end, "l": line.decode("utf-8", "replace")}):
                    return any_sent  # the rest goes in the next call, from this offset
                self.log_off = end
                any_sent = True
        return any_sent

    def _skip_line(self, off):
        """The offset just past the line starting at off, or None while its newline is not written."""
        try:
            with open(self.ev_path, "rb") as f:
                f.seek(off)
                pos = off
                while True:
                    chunk = f.read(CHUNK)
                    if not chunk:
                        return None
                    nl = chunk.find(b"\n")
                    if nl >= 0:
                        return pos + nl + 1
                    pos += len(chunk)
        except OSError:
            return None

    def pump_events(self):
        any_sent = False
        while not self.exit_seen and not self.full:
            data = self._read(self.ev_path, self.ev_off)
            end = data.rfind(b"\n")
            if end < 0:
                if len(data) >= FOLLOW_MAX_LINE:
                    # A line longer than a read (an agent before events were bounded): skip it with
                    # a warning in its place rather than stall on it forever.
                    skipped = self._skip_line(self.ev_off)
                    if skipped is None:
                        return any_sent  # not all written yet
                    ev = {"type": "warning", "message": "an event line of %d bytes could not be read and was skipped" % (skipped - self.ev_off)}
                    if not self.offer({"k": "ev", "o": skipped, "e": ev}):
                        return any_sent
                    self.ev_off = skipped
                    any_sent = True
                    continue
                return any_sent
            for line in data[: end + 1].split(b"\n")[:-1]:
                nxt = self.ev_off + len(line) + 1
                try:
                    ev = json.loads(line.decode("utf-8"))
                except ValueError:
                    self.ev_off = nxt
                    continue
                # Lines written before this event go first: the stream keeps the real order.
                upto = ev.get("logOffset") if isinstance(ev, dict) else None
                if isinstance(upto, int) and upto > self.log_off:
                    self.pump_log(upto=upto)
                    if self.full:
                        return any_sent  # this event waits for its earlier lines (next call)
                if not self.offer({"k": "ev", "o": nxt, "e": ev}):
                    return any_sent
                self.ev_off = nxt
                any_sent = True
                if isinstance(ev, dict) and ev.get("type") == "exit":
                    self.exit_seen = True
                    break
            if len(data) < FOLLOW_MAX_LINE:
                return any_sent
        return any_sent

    def finish(self):
        self.pump_log(final=True)
        if self.full:
            return self.pause()  # the next call resumes the drain (the exit is before its cursor)
        self.send({"k": "end"})
        self.out.flush()
        return EXIT_OK

    def run(self):
        last_sent = time.monotonic()
        last_alive = 0.0
        while True:
            # The log only grows, so an event written after this size was read has a logOffset at
            # or past it: sending events (each preceded by its earlier lines) and then the log up to
            # this size keeps lines and events in the order they happened.
            try:
                limit = os.path.getsize(self.log_path)
            except OSError:
                limit = 0
            sent = self.pump_events()
            sent = self.pump_log(upto=limit) or sent
            if self.exit_seen:
                return self.finish()
            if self.full:
                return self.pause()
            now = time.monotonic()
            if sent:
                last_sent = now
            elif now - last_sent >= FOLLOW_HB_S:
                st = read_json_file(os.path.join(self.run_dir, "status.json")) or {}
                self.send({"k": "hb", "t": now_ms(), "phase": st.get("phase")})
                last_sent = now
            self.out.flush()
            if now - last_alive >= 1.0:
                last_alive = now
                if not agent_alive(self.run_dir):
                    # The exit event may have landed just before the agent ended: look once more.
                    time.sleep(0.5)
                    self.pump_log()
                    self.pump_events()
                    if self.exit_seen:
                        return self.finish()
                    if self.full:
                        return self.pause()
                    self.send({"k": "lost", "message": "the agent (pid %s) is gone without an exit record" % read_pid(self.run_dir)})
                    self.out.flush()
                    return EXIT_LOST
            if self.deadline is not None and time.monotonic() >= self.deadline:
                return self.pause()
            time.sleep(FOLLOW_POLL_S)


def cmd_follow(run_dir, log_off, ev_off, max_wait_ms=None, max_bytes=None):
    if not os.path.isdir(run_dir):
        print_json({"error": "no such run directory: %s" % run_dir})
        return EXIT_NO_RUN
    try:
        return Follower(run_dir, log_off, ev_off, max_wait_ms, max_bytes).run()
    except BrokenPipeError:
        # The reader went away (client closed the channel): nothing left to do.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        except OSError:
            pass
        return EXIT_OK


# ---------------------------------------------------------------------------------------------
# manifest / sync-apply


def cache_path_for(root):
    root = os.path.abspath(root)
    return os.path.join(os.path.dirname(root), "." + os.path.basename(root) + ".hashcache.json")


def load_hash_cache(root):
    c = read_json_file(cache_path_for(root))
    if isinstance(c, dict) and c.get("version") == 1 and isinstance(c.get("entries"), dict):
        return c["entries"]
    return {}


def build_manifest(root, cache=None):
    """{rel: {size, mode, sha256}} of every regular file below root; hashes reused from the cache
    when path, size and mtime_ns all match, and the cache rewritten with what is there now."""
    root = os.path.abspath(root)
    if cache is None:
        cache = load_hash_cache(root)
    files = {}
    new_cache = {}
    if not os.path.isdir(root):
        return files
    for dirpath, dirs, names in os.walk(root):
        dirs.sort()
        for fn in sorted(names):
            full = os.path.join(dirpath, fn)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            c = cache.get(rel)
            # mtimeNs is stored as a string: nanoseconds since 1970 exceed a JS number's exact range.
            # ctime too: an edit that restores the mtime (touch -r, cp -p) still changes the ctime.
            if (isinstance(c, dict) and c.get("size") == st.st_size and c.get("mtimeNs") == str(st.st_mtime_ns)
                    and c.get("ctimeNs") == str(st.st_ctime_ns) and c.get("sha256")):
                digest = c["sha256"]
            else:
                digest = sha256_file(full)
            files[rel] = {"size": st.st_size, "mode": stat.S_IMODE(st.st_mode), "sha256": digest}
            new_cache[rel] = {"size": st.st_size, "mtimeNs": str(st.st_mtime_ns), "ctimeNs": str(st.st_ctime_ns), "sha256": digest}
    try:
        atomic_write(cache_path_for(root), json.dumps({"version": 1, "entries": new_cache}, separators=(",", ":")).encode("utf-8"))
    except OSError:
        pass  # a read-only parent only costs re-hashing next time
    return files


def cmd_manifest(root):
    print_json({"files": build_manifest(root)})
    return EXIT_OK


class UnsafePath(Exception):
    pass


def _prepare_dirs(root, parts, rel):
    """Create root/parts..., refusing to pass through a symlink (which could lead outside root)."""
    cur = root
    for p in parts:
        cur = os.path.join(cur, p)
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            os.mkdir(cur)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePath("%s: %s is a symlink" % (rel, os.path.relpath(cur, root)))
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(cur)  # a file became a folder
            os.mkdir(cur)
    return cur


def _check_parents(root, parts, rel):
    cur = root
    for p in parts:
        cur = os.path.join(cur, p)
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePath("%s: %s is a symlink" % (rel, os.path.relpath(cur, root)))
        if not stat.S_ISDIR(st.st_mode):
            return False
    return True


def _write_file(target, rel, chunks, mode, cache):
    """Write one synced file atomically (temporary name, then rename) and record its hash."""
    tmp = tmp_name(target)
    h = hashlib.sha256()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for b in chunks:
            h.update(b)
            os.write(fd, b)
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        _unlink_quiet(tmp)
        raise
    os.close(fd)
    try:
        st = os.lstat(target)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(target)  # a folder became a file
    except FileNotFoundError:
        pass
    os.replace(tmp, target)
    st = os.lstat(target)
    # We hashed exactly the bytes we wrote; verification can trust this entry.
    cache[rel] = {"size": st.st_size, "mtimeNs": str(st.st_mtime_ns), "ctimeNs": str(st.st_ctime_ns), "sha256": h.hexdigest()}


def cmd_sync_apply_staged(root):
    """sync-apply with the tar staged in storage (machines reached without a byte stream, such as
    SSM): stdin is JSON {"storage": descriptor, "key": key, "secrets": {...} or null}."""
    try:
        req = json.loads(sys.stdin.buffer.read().decode("utf-8"))
        desc, key = req["storage"], req["key"]
        creds = check_launch_secrets(req.get("secrets")) if req.get("secrets") is not None else None
        if not isinstance(key, str) or safe_rel(key) is None:
            raise ValueError("key must be a relative storage key")
    except (ValueError, KeyError, TypeError, UsageError) as e:
        print_json({"ok": False, "error": "staged sync-apply needs {storage, key, secrets?} on stdin: %s" % e})
        return EXIT_USAGE
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    staged = os.path.join(parent, ".runctl-sync-staged-%s.tar" % secrets.token_hex(6))
    try:
        storage = open_storage(desc, (creds or {}).get("aws"), work_dir=parent)
        if storage.get_file(key, staged) is None and not os.path.exists(staged):
            print_json({"ok": False, "error": "staged sync object %s does not exist" % key})
            return EXIT_ERROR
        with open(staged, "rb") as f:
            return cmd_sync_apply(root, f)
    except StorageError as e:
        print_json({"ok": False, "error": "could not fetch the staged sync: %s" % e})
        return EXIT_ERROR
    finally:
        _unlink_quiet(staged)


def cmd_sync_apply(root, stream=None):
    root = os.path.abspath(root)
    os.makedirs(root, exist_ok=True)
    cache = load_hash_cache(root)
    written = 0
    deleted = 0
    prepared = {}
    writers = None
    in_flight = collections.deque()
    try:
        tf = tarfile.open(fileobj=stream if stream is not None else sys.stdin.buffer, mode="r|*")
    except tarfile.TarError as e:
        print_json({"ok": False, "error": "stdin is not a tar stream: %s" % e})
        return EXIT_USAGE
    control = None
    try:
        for m in tf:
            if control is None:
                if m.name != ".runctl-sync/control.json" or not m.isreg():
                    print_json({"ok": False, "error": "the first tar member must be .runctl-sync/control.json, got %r" % m.name})
                    return EXIT_USAGE
                try:
                    control = json.loads(tf.extractfile(m).read().decode("utf-8"))
                    if not isinstance(control, dict):
                        raise ValueError("not an object")
                except ValueError as e:
                    print_json({"ok": False, "error": "control.json is invalid: %s" % e})
                    return EXIT_USAGE
                continue
            rel = safe_rel(m.name)
            if rel is None:
                if m.isdir() and m.name in (".", "./"):
                    continue  # "./" itself
                raise UnsafePath("%s: absolute or climbing path" % m.name)
            if not (m.isreg() or m.isdir()):
                raise UnsafePath("%s: not a regular file or folder" % m.name)
            parts = rel.split("/")
            if m.isdir():
                _prepare_dirs(root, parts, rel)
                continue
            # Most members share their folder with the previous one: check each folder once.
            key = tuple(parts[:-1])
            parent = prepared.get(key)
            if parent is None:
                parent = prepared[key] = _prepare_dirs(root, parts[:-1], rel)
            target = os.path.join(parent, parts[-1])
            mode = m.mode & 0o777  # permission bits only: setuid/setgid from a tar are never applied
            if m.size <= SYNC_SMALL_FILE:
                # Small files are read here (the stream is sequential) and written by a few threads:
                # creating many files is bound by per-file syscalls, not by bytes.
                data = tf.extractfile(m).read()
                if writers is None:
                    writers = ThreadPoolExecutor(max_workers=SYNC_WRITERS)
                in_flight.append(writers.submit(_write_file, target, rel, [data], mode, cache))
                while len(in_flight) > 4 * SYNC_WRITERS:
                    in_flight.popleft().result()
            else:
                src = tf.extractfile(m)
                _write_file(target, rel, iter(lambda: src.read(CHUNK), b""), mode, cache)
            written += 1
        for f in in_flight:
            f.result()
        in_flight.clear()
        if control is None:
            print_json({"ok": False, "error": "empty tar stream: .runctl-sync/control.json is missing"})
            return EXIT_USAGE
        for name in control.get("delete") or []:
            rel = safe_rel(name)
            if rel is None:
                raise UnsafePath("%s: absolute or climbing path in delete" % name)
            parts = rel.split("/")
            if not _check_parents(root, parts[:-1], rel):
                continue
            target = os.path.join(root, *parts)
            try:
                st = os.lstat(target)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(target)
            else:
                os.unlink(target)
            deleted += 1
            # Prune the folders this emptied, up to (not including) root.
            d = os.path.dirname(target)
            while d != root and d.startswith(root + os.sep):
                try:
                    os.rmdir(d)
                except OSError:
                    break
                d = os.path.dirname(d)
    except UnsafePath as e:
        print_json({"ok": False, "error": "unsafe path in tar stream: %s" % e})
        return EXIT_UNSAFE
    except tarfile.TarError as e:
        print_json({"ok": False, "error": "bad tar stream: %s" % e})
        return EXIT_ERROR
    finally:
        # Whatever ended the stream, no write may still be under way once we answer.
        for f in in_flight:
            try:
                f.result()
            except BaseException:
                pass
        if writers is not None:
            writers.shutdown(wait=True)
    files = build_manifest(root, cache)
    expect = control.get("expect")
    if not isinstance(expect, dict):
        expect = {}
    mismatches = []
    for rel in sorted(expect):
        exp = expect[rel] or {}
        got = files.get(rel)
        if got is None:
            mismatches.append({"path": rel, "reason": "missing"})
        elif exp.get("size") is not None and got["size"] != exp.get("size"):
            mismatches.append({"path": rel, "reason": "size %d != expected %s" % (got["size"], exp.get("size"))})
        elif exp.get("sha256") is not None and got["sha256"] != exp.get("sha256"):
            mismatches.append({"path": rel, "reason": "sha256 differs"})
        elif exp.get("mode") is not None and got["mode"] != exp.get("mode"):
            mismatches.append({"path": rel, "reason": "mode %o != expected %o" % (got["mode"], exp.get("mode"))})
    for rel in sorted(set(files) - set(expect)):
        mismatches.append({"path": rel, "reason": "unexpected"})
    if mismatches:
        print_json({"ok": False, "mismatches": mismatches, "written": written, "deleted": deleted})
        return EXIT_VERIFY
    print_json({"ok": True, "written": written, "deleted": deleted})
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# command line


def parse_follow(args):
    if not args:
        raise UsageError("follow needs RUN_DIR")
    run_dir = args[0]
    # Byte offsets (0 and up), and the bounded mode's limits (1 and up; absent: unbounded).
    opts = {"--log-offset": 0, "--events-offset": 0, "--max-wait-ms": None, "--max-bytes": None}
    what = {"--log-offset": "a byte offset", "--events-offset": "a byte offset", "--max-wait-ms": "a positive number of milliseconds", "--max-bytes": "a positive number of bytes"}
    i = 1
    while i < len(args):
        flag = args[i]
        val = None
        if "=" in flag:
            flag, val = flag.split("=", 1)
        elif i + 1 < len(args):
            val = args[i + 1]
            i += 1
        if flag not in opts or val is None:
            raise UsageError("unknown or incomplete option %s" % args[i])
        try:
            opts[flag] = int(val)
        except ValueError:
            raise UsageError("%s needs %s" % (flag, what[flag]))
        if opts[flag] < (0 if flag in ("--log-offset", "--events-offset") else 1):
            raise UsageError("%s needs %s" % (flag, what[flag]))
        i += 1
    return run_dir, opts["--log-offset"], opts["--events-offset"], opts["--max-wait-ms"], opts["--max-bytes"]


def main(argv):
    if not argv:
        raise UsageError("no command")
    cmd, args = argv[0], argv[1:]

    def one(n):
        if len(args) != n:
            raise UsageError("%s takes %d argument(s)" % (cmd, n))
        return args

    if cmd == "launch":
        return cmd_launch(one(1)[0])
    if cmd == "supervise":
        if len(args) == 2 and args[1] == "--secrets-stdin":
            return cmd_supervise(args[0], secrets_on_stdin=True)
        return cmd_supervise(one(1)[0])
    if cmd == "follow":
        return cmd_follow(*parse_follow(args))
    if cmd == "signal":
        a = one(2)
        return cmd_signal(a[0], a[1])
    if cmd == "status":
        return cmd_status(one(1)[0])
    if cmd == "reap":
        return cmd_reap(one(1)[0])
    if cmd == "watch":
        return cmd_watch(one(1)[0])
    if cmd == "manifest":
        return cmd_manifest(one(1)[0])
    if cmd == "sync-apply":
        if len(args) == 2 and args[1] == "--staged":
            return cmd_sync_apply_staged(args[0])
        return cmd_sync_apply(one(1)[0])
    raise UsageError("unknown command %r" % cmd)


if __name__ == "__main__":
    try:
        code = main(sys.argv[1:])
    except UsageError as e:
        print_json({"error": str(e), "usage": USAGE})
        code = EXIT_USAGE
    except Exception as e:
        sys.stderr.write(traceback.format_exc())
        try:
            print_json({"error": "%s: %s" % (type(e).__name__, e)})
        except Exception:
            pass
        code = EXIT_ERROR
    sys.exit(code)

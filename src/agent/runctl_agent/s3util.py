"""S3 shared pieces: error classification, retry tunables, hashes and ETag rules, descriptor checks."""

import errno
import hashlib
import re
import threading

from .constants import CHUNK
from .storage_dir import StorageError


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

"""The boto3 backend of S3Storage (used when the interpreter has boto3)."""

import base64
import hashlib
import os
import struct
import zlib
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from .constants import CHUNK
from .s3util import S3OpError, S3_MULTIPART, S3_NOT_FOUND_CODES, S3_TRANSIENT_CODES, _BACKEND_LOCK, _BOTO3_STATE, _S3_LOCAL_ERRNOS, _classify_text, _clean_etag, _etag_is_md5, _md5_b64, _new_hash, _short, hash_bytes_md5
from .storage_dir import SourceChanged

STREAM_PART = 16 << 20  # part size of the single-read multipart upload
STREAM_THREADS = 4  # parts uploaded at once (with the one being read, at most 5 parts are held in memory)


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


def _knows_crc32(client):
    try:
        members = client.meta.service_model.operation_model("UploadPart").input_shape.members
        return "ChecksumCRC32" in members
    except Exception:
        return False


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
        # Part checksums of the streamed upload: CRC32 (cheap to compute) when the descriptor asks for
        # checksums "when supported" and this botocore knows S3's flexible checksums; else Content-MD5,
        # which every S3-compatible server takes (what `when_required` is for).
        self.part_crc32 = cfg["checksums"] == "when_supported" and _knows_crc32(self.client)
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
        except (S3OpError, SourceChanged):
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

    def _put_part(self, key, upload_id, number, data):
        kwargs = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id, "PartNumber": number, "Body": data}
        if self.part_crc32:
            kwargs["ChecksumCRC32"] = base64.b64encode(struct.pack(">I", zlib.crc32(data) & 0xFFFFFFFF)).decode("ascii")
        else:
            h = _new_hash("md5")
            h.update(data)
            kwargs["ContentMD5"] = base64.b64encode(h.digest()).decode("ascii")
        r = self.client.upload_part(**kwargs)
        part = {"PartNumber": number, "ETag": r["ETag"]}
        if self.part_crc32:
            part["ChecksumCRC32"] = r.get("ChecksumCRC32") or kwargs["ChecksumCRC32"]
        return part

    def put_file_streamed(self, key, src):
        """Upload src as one multipart upload, reading it once: parts of STREAM_PART bytes go out
        STREAM_THREADS at a time, each with its checksum, while the sha256 of the whole file is computed
        from the same bytes. Returns (size, sha256). A file whose size changes while it is read raises
        SourceChanged; on any failure the multipart upload is aborted."""
        what = "upload to s3://%s/%s" % (self.bucket, key)

        def go():
            with open(src, "rb") as f:
                size0 = os.fstat(f.fileno()).st_size
                create = {"Bucket": self.bucket, "Key": key}
                if self.part_crc32:
                    create["ChecksumAlgorithm"] = "CRC32"
                upload_id = self.client.create_multipart_upload(**create)["UploadId"]
                pool = ThreadPoolExecutor(max_workers=STREAM_THREADS)
                futures = []
                try:
                    sha = hashlib.sha256()
                    size = 0
                    number = 0
                    while True:
                        self._check_stop()
                        data = f.read(STREAM_PART)
                        if not data:
                            break
                        sha.update(data)
                        size += len(data)
                        number += 1
                        futures.append(pool.submit(self._put_part, key, upload_id, number, data))
                        data = None
                        for fut in futures:  # a failed part fails the upload now, not after the whole read
                            if fut.done() and fut.exception() is not None:
                                raise fut.exception()
                        pending = [fut for fut in futures if not fut.done()]
                        if len(pending) >= STREAM_THREADS:
                            wait(pending, return_when=FIRST_COMPLETED)
                    if size != size0 or os.fstat(f.fileno()).st_size != size0:
                        raise SourceChanged("%s changed size while it was uploaded (%d bytes, then %d)" % (src, size0, size))
                    parts = [fut.result() for fut in futures]
                    if not parts:  # an empty file (not one this path is used for): one empty part
                        parts = [self._put_part(key, upload_id, 1, b"")]
                    self._check_stop()
                    self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                          MultipartUpload={"Parts": parts})
                    return size, sha.hexdigest()
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    pool.shutdown(wait=True)
                    try:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                    except Exception:
                        pass
                    raise
                finally:
                    pool.shutdown(wait=True)
        return self._call(what, go)

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

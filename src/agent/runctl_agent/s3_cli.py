"""The AWS CLI backend of S3Storage (used when boto3 is missing but `aws` is on PATH)."""

import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys

from .fsutil import _unlink_quiet, atomic_write
from .s3util import S3OpError, S3_MULTIPART, S3_NOT_FOUND_CODES, S3_TRANSIENT_CODES, _AWS_CLI_CACHE, _BACKEND_LOCK, _classify_text, _clean_etag, _etag_is_md5, _md5_b64, _short, hash_bytes_md5


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

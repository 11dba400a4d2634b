"""s3_cli: the AWS CLI backend against a fake `aws` executable on PATH (a small script that keeps
objects in a folder and logs every call), and the error classification it relies on."""

import json
import os
import shutil
import sys
import tempfile
import unittest

from runctl_agent.s3_cli import _CliBackend, _find_aws_cli
from runctl_agent.s3util import S3OpError, _classify_text, hash_bytes_md5

FAKE_AWS = r'''#!%(python)s
import hashlib, json, os, sys
root = os.environ["FAKE_AWS_ROOT"]
args = sys.argv[1:]
with open(os.path.join(root, "calls.jsonl"), "a") as f:
    f.write(json.dumps({"argv": args, "keyId": os.environ.get("AWS_ACCESS_KEY_ID"), "secret": os.environ.get("AWS_SECRET_ACCESS_KEY"),
                        "config": os.environ.get("AWS_CONFIG_FILE"), "attempts": os.environ.get("AWS_MAX_ATTEMPTS")}) + "\n")
if args == ["--version"]:
    print("aws-cli/2.15.0 Python/3.11 Linux/6 exe/x86_64")
    sys.exit(0)
def opt(name):
    return args[args.index(name) + 1]
objects = os.path.join(root, "objects")
def path_of(key):
    return os.path.join(objects, key.replace("/", "%%2F"))
if "fail-slowdown" in " ".join(args):
    sys.stderr.write("An error occurred (SlowDown) when calling the PutObject operation: Please reduce your request rate.\n")
    sys.exit(254)
cmd = args[1]
if cmd == "put-object":
    os.makedirs(objects, exist_ok=True)
    with open(opt("--body"), "rb") as f:
        data = f.read()
    with open(path_of(opt("--key")), "wb") as f:
        f.write(data)
    print(json.dumps({"ETag": '"%%s"' %% hashlib.md5(data).hexdigest()}))
elif cmd == "get-object":
    src = path_of(opt("--key"))
    if not os.path.exists(src):
        sys.stderr.write("An error occurred (NoSuchKey) when calling the GetObject operation: The specified key does not exist.\n")
        sys.exit(254)
    dest = args[args.index("--key") + 2]
    with open(src, "rb") as f, open(dest, "wb") as g:
        g.write(f.read())
    print(json.dumps({"ContentLength": os.path.getsize(src), "ServerSideEncryption": os.environ.get("FAKE_AWS_SSE", "AES256")}))
elif cmd == "list-objects-v2":
    keys = sorted(n.replace("%%2F", "/") for n in os.listdir(objects)) if os.path.isdir(objects) else []
    out = []
    for k in keys:
        if k.startswith(opt("--prefix")):
            with open(path_of(k), "rb") as f:
                data = f.read()
            out.append({"Key": k, "Size": len(data), "ETag": '"%%s"' %% hashlib.md5(data).hexdigest()})
    print(json.dumps({"Contents": out} if out else {}))
elif cmd == "delete-object":
    try:
        os.unlink(path_of(opt("--key")))
    except FileNotFoundError:
        pass
else:
    sys.stderr.write("fake aws: unsupported %%r\n" %% (args,))
    sys.exit(2)
'''


class CliBackendTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="runctl-agent-s3cli-")
        self.addCleanup(shutil.rmtree, self.root)
        self.bin = os.path.join(self.root, "bin")
        os.makedirs(self.bin)
        aws = os.path.join(self.bin, "aws")
        with open(aws, "w") as f:
            f.write(FAKE_AWS % {"python": sys.executable})
        os.chmod(aws, 0o755)
        os.environ["FAKE_AWS_ROOT"] = self.root
        self.addCleanup(os.environ.pop, "FAKE_AWS_ROOT", None)
        self.path_env = self.bin + os.pathsep + "/usr/bin:/bin"

    def backend(self, creds=None, force_path_style=False):
        exe, version = _find_aws_cli(self.path_env)
        self.assertEqual((exe, version), (os.path.join(self.bin, "aws"), "aws-cli/2.15.0"))
        cfg = {"bucket": "bkt", "checksums": "when_required", "region": "eu-west-1", "forcePathStyle": force_path_style,
               "endpoint": "http://127.0.0.1:1"}
        return _CliBackend(cfg, creds, exe, version, os.path.join(self.root, "work"), self.path_env)

    def calls(self):
        with open(os.path.join(self.root, "calls.jsonl")) as f:
            return [json.loads(line) for line in f]

    def test_no_aws_on_path(self):
        empty = os.path.join(self.root, "empty")
        os.makedirs(empty)
        self.assertEqual(_find_aws_cli(empty), (None, "no `aws` on PATH"))

    def test_put_get_list_delete_round_trip(self):
        b = self.backend()
        self.assertTrue(b.v2)
        b.put_bytes("run/a/x.bin", b"hello")
        self.assertEqual(b.get_bytes("run/a/x.bin"), b"hello")
        self.assertEqual(b.list("run/a/"), [("run/a/x.bin", 5, hash_bytes_md5(b"hello"))])
        b.delete("run/a/x.bin")
        self.assertEqual(b.list("run/"), [])
        with self.assertRaises(S3OpError) as cm:
            b.get_bytes("run/a/x.bin")
        self.assertTrue(cm.exception.not_found)
        self.assertFalse(cm.exception.transient)
        put = next(c["argv"] for c in self.calls() if "put-object" in c["argv"])
        for flag in ("--content-md5", "--endpoint-url", "--region", "--no-cli-pager"):
            self.assertIn(flag, put)
        self.assertEqual(os.listdir(os.path.join(self.root, "work", ".s3-tmp")), [])

    def test_a_kms_object_etag_is_not_an_md5(self):
        b = self.backend()
        b.put_bytes("k", b"v")
        dest = os.path.join(self.root, "got")
        self.assertTrue(b.get_file("k", dest))
        os.environ["FAKE_AWS_SSE"] = "aws:kms"  # read by the fake aws through the backend's environment
        self.addCleanup(os.environ.pop, "FAKE_AWS_SSE", None)
        self.assertFalse(self.backend().get_file("k", dest))

    def test_credentials_travel_only_in_the_environment(self):
        b = self.backend(creds={"accessKeyId": "AKIDTEST", "secretAccessKey": "SECRETTEST"}, force_path_style=True)
        b.put_bytes("k", b"v")
        for call in self.calls()[1:]:
            self.assertEqual((call["keyId"], call["secret"], call["attempts"]), ("AKIDTEST", "SECRETTEST", "1"))
            self.assertNotIn("SECRETTEST", " ".join(call["argv"]))
        config = self.calls()[-1]["config"]
        with open(config) as f:
            text = f.read()
        self.assertIn("addressing_style = path", text)
        self.assertNotIn("SECRETTEST", text)

    def test_throttling_is_transient(self):
        b = self.backend()
        with self.assertRaises(S3OpError) as cm:
            b.put_bytes("fail-slowdown", b"v")
        self.assertEqual((cm.exception.transient, cm.exception.code), (True, "SlowDown"))


class Classification(unittest.TestCase):
    def test_codes_and_connection_texts(self):
        self.assertEqual(_classify_text("An error occurred (NoSuchKey) when calling"), (False, "NoSuchKey"))
        self.assertEqual(_classify_text("An error occurred (503) when calling"), (True, "503"))
        self.assertEqual(_classify_text("Could not connect to the endpoint URL"), (True, None))
        self.assertEqual(_classify_text("Access Denied"), (False, None))


if __name__ == "__main__":
    unittest.main()

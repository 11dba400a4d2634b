"""s3_boto: the single-read streamed multipart upload (put_file_streamed) against a fake client that
records its calls, and S3Storage.put_file choosing it for big files."""

import base64
import hashlib
import os
import shutil
import struct
import tempfile
import threading
import types
import unittest
import zlib
from unittest import mock

from runctl_agent import s3_boto, storage_s3
from runctl_agent.s3_boto import _Boto3Backend
from runctl_agent.s3util import S3OpError
from runctl_agent.storage_dir import SourceChanged, StorageError
from runctl_agent.storage_s3 import S3Storage

PART = 1000  # STREAM_PART in these tests


class FakeClient:
    """The S3 calls the streamed upload makes; parts are kept by number."""

    def __init__(self, fail_part=None, on_create=None):
        self.calls = []
        self.parts = {}
        self.completed = None
        self.aborted = []
        self.fail_part = fail_part
        self.on_create = on_create
        self.lock = threading.Lock()

    def create_multipart_upload(self, **kw):
        with self.lock:
            self.calls.append(("create", kw))
        if self.on_create is not None:
            self.on_create()
        return {"UploadId": "up-1"}

    def upload_part(self, **kw):
        with self.lock:
            self.calls.append(("part", {k: v for k, v in kw.items() if k != "Body"}))
        if kw["PartNumber"] == self.fail_part:
            raise S3OpError("upload of part %d: connection reset" % kw["PartNumber"], True)
        body = bytes(kw["Body"])
        if "ContentMD5" in kw:
            assert kw["ContentMD5"] == base64.b64encode(hashlib.md5(body).digest()).decode("ascii")
        if "ChecksumCRC32" in kw:
            assert kw["ChecksumCRC32"] == base64.b64encode(struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)).decode("ascii")
        with self.lock:
            self.parts[kw["PartNumber"]] = body
        return {"ETag": '"%s"' % hashlib.md5(body).hexdigest()}

    def complete_multipart_upload(self, **kw):
        with self.lock:
            self.calls.append(("complete", kw))
        self.completed = b"".join(self.parts[p["PartNumber"]] for p in kw["MultipartUpload"]["Parts"])
        return {}

    def abort_multipart_upload(self, **kw):
        with self.lock:
            self.calls.append(("abort", kw))
        self.aborted.append(kw["UploadId"])
        return {}


def backend(client, crc32=False):
    b = _Boto3Backend.__new__(_Boto3Backend)
    b.bucket = "bkt"
    b.client = client
    b.part_crc32 = crc32
    b.should_stop = None
    exc = types.SimpleNamespace(ClientError=type("ClientError", (Exception,), {}),
                                BotoCoreError=type("BotoCoreError", (Exception,), {}))
    b.exc = exc
    return b


class StreamedUpload(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.path = os.path.join(self.tmp, "ballast.bin")
        self.data = os.urandom(PART * 7 + 123)  # 8 parts, the last one short
        with open(self.path, "wb") as f:
            f.write(self.data)
        patcher = mock.patch.object(s3_boto, "STREAM_PART", PART)
        patcher.start()
        self.addCleanup(patcher.stop)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_parts_in_order_and_sha256_of_the_file(self):
        client = FakeClient()
        size, sha = backend(client).put_file_streamed("run/ck/files/ballast.bin", self.path)
        self.assertEqual(size, len(self.data))
        self.assertEqual(sha, hashlib.sha256(self.data).hexdigest())
        self.assertEqual(client.completed, self.data)
        kinds = [c[0] for c in client.calls]
        self.assertEqual(kinds[0], "create")
        self.assertEqual(kinds[-1], "complete")
        self.assertEqual(kinds.count("part"), 8)
        self.assertEqual(client.aborted, [])
        parts = client.calls[-1][1]["MultipartUpload"]["Parts"]
        self.assertEqual([p["PartNumber"] for p in parts], list(range(1, 9)))
        self.assertEqual(parts[0]["ETag"], '"%s"' % hashlib.md5(self.data[:PART]).hexdigest())
        for _kind, kw in client.calls[1:-1]:
            self.assertIn("ContentMD5", kw)
            self.assertNotIn("ChecksumCRC32", kw)
        self.assertNotIn("ChecksumAlgorithm", client.calls[0][1])

    def test_crc32_parts_when_checksums_are_computed_when_supported(self):
        client = FakeClient()
        size, sha = backend(client, crc32=True).put_file_streamed("k", self.path)
        self.assertEqual((size, sha), (len(self.data), hashlib.sha256(self.data).hexdigest()))
        self.assertEqual(client.calls[0][1].get("ChecksumAlgorithm"), "CRC32")
        for _kind, kw in client.calls[1:-1]:
            self.assertIn("ChecksumCRC32", kw)
            self.assertNotIn("ContentMD5", kw)
        for p in client.calls[-1][1]["MultipartUpload"]["Parts"]:
            self.assertIn("ChecksumCRC32", p)

    def test_a_failing_part_aborts_the_upload(self):
        client = FakeClient(fail_part=3)
        with self.assertRaises(S3OpError) as cm:
            backend(client).put_file_streamed("k", self.path)
        self.assertTrue(cm.exception.transient)
        self.assertEqual(client.aborted, ["up-1"])
        self.assertNotIn("complete", [c[0] for c in client.calls])

    def test_a_file_that_changes_size_while_read_fails_and_aborts(self):
        def grow():
            with open(self.path, "ab") as f:
                f.write(b"x" * 10)
        client = FakeClient(on_create=grow)
        with self.assertRaises(SourceChanged):
            backend(client).put_file_streamed("k", self.path)
        self.assertEqual(client.aborted, ["up-1"])
        self.assertNotIn("complete", [c[0] for c in client.calls])

    def test_stop_aborts(self):
        client = FakeClient()
        b = backend(client)
        b.should_stop = lambda: True
        with self.assertRaises(S3OpError):
            b.put_file_streamed("k", self.path)
        self.assertEqual(client.aborted, ["up-1"])


class PutFileChoosesStreamed(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        for p in (mock.patch.object(s3_boto, "STREAM_PART", PART), mock.patch.object(storage_s3, "S3_MULTIPART", 5000)):
            p.start()
            self.addCleanup(p.stop)

    def storage(self, client):
        st = S3Storage.__new__(S3Storage)
        st.prefix = "pre"
        st.bucket = "bkt"
        st.warn = None
        st.interrupted = None
        st.retry_budget_s = 5.0
        st.backend = backend(client)
        return st

    def test_big_file_streamed_small_file_put(self):
        big = os.path.join(self.tmp, "big")
        data = os.urandom(6000)
        with open(big, "wb") as f:
            f.write(data)
        client = FakeClient()
        seen = []
        size, sha = self.storage(client).put_file("a/big", big, on_bytes=seen.append)
        self.assertEqual((size, sha), (6000, hashlib.sha256(data).hexdigest()))
        self.assertEqual(seen, [6000])
        self.assertEqual(client.calls[0][1]["Key"], "pre/a/big")
        self.assertEqual(client.completed, data)

    def test_size_change_is_not_retried(self):
        big = os.path.join(self.tmp, "big")
        with open(big, "wb") as f:
            f.write(b"y" * 6000)

        def grow():
            with open(big, "ab") as f:
                f.write(b"z")
        client = FakeClient(on_create=grow)
        with self.assertRaises(SourceChanged):
            self.storage(client).put_file("a/big", big)
        self.assertEqual([c[0] for c in client.calls].count("create"), 1)

    def test_transient_part_failure_is_retried_with_a_new_upload(self):
        big = os.path.join(self.tmp, "big")
        data = os.urandom(6000)
        with open(big, "wb") as f:
            f.write(data)
        client = FakeClient(fail_part=2)
        st = self.storage(client)
        calls = {"n": 0}

        def create(**kw):
            calls["n"] += 1
            if calls["n"] == 2:
                client.fail_part = None
            return FakeClient.create_multipart_upload(client, **kw)
        client.create_multipart_upload = create
        st._sleep = lambda s: True
        size, sha = st.put_file("a/big", big)
        self.assertEqual((size, sha), (6000, hashlib.sha256(data).hexdigest()))
        self.assertEqual(calls["n"], 2)
        self.assertEqual(client.aborted, ["up-1"])
        self.assertEqual(client.completed, data)
        self.assertTrue(issubclass(SourceChanged, StorageError))


class BotocoreParams(unittest.TestCase):
    """The parameters the streamed upload sends are valid for botocore's S3 model (Stubber checks them)."""

    def setUp(self):
        try:
            import boto3  # noqa: F401
            from botocore.stub import Stubber  # noqa: F401
        except Exception:
            self.skipTest("boto3 is not installed")

    def run_with(self, crc32):
        import boto3
        from botocore.stub import ANY, Stubber
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "f")
        data = os.urandom(PART * 2 + 5)
        with open(path, "wb") as f:
            f.write(data)
        client = boto3.session.Session(aws_access_key_id="a", aws_secret_access_key="b", region_name="us-east-1").client(
            "s3", endpoint_url="http://127.0.0.1:9")
        b = backend(client, crc32)
        with Stubber(client) as stub, mock.patch.object(s3_boto, "STREAM_PART", PART), \
                mock.patch.object(s3_boto, "STREAM_THREADS", 1):
            stub.add_response("create_multipart_upload", {"UploadId": "u"}, dict({"Bucket": "bkt", "Key": "k"}, **(
                {"ChecksumAlgorithm": "CRC32"} if crc32 else {})))
            for _ in range(3):
                stub.add_response("upload_part", {"ETag": '"e"'}, None)
            stub.add_response("complete_multipart_upload", {}, {"Bucket": "bkt", "Key": "k", "UploadId": "u", "MultipartUpload": ANY})
            size, sha = b.put_file_streamed("k", path)
            stub.assert_no_pending_responses()
        self.assertEqual((size, sha), (len(data), hashlib.sha256(data).hexdigest()))

    def test_md5_parts(self):
        self.run_with(False)

    def test_crc32_parts(self):
        self.run_with(True)


if __name__ == "__main__":
    unittest.main()

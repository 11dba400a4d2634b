"""tar_reader.TarReader against tarfile's own archives (ustar, GNU, pax), and its refusals."""

import io
import tarfile
import unittest

from runctl_agent.tar_reader import DIRECTORY, REGULAR, TarFormatError, TarReader

LONG = "deep/" * 30 + "name-longer-than-a-hundred-bytes.py"  # 185 bytes: needs a long-name record


def archive(members, fmt):
    """Tar bytes of (name, kind, data_or_target, mode) written by tarfile in format `fmt`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, kind, payload, mode in members:
            ti = tarfile.TarInfo(name)
            ti.mode = mode
            if kind == "file":
                ti.size = len(payload)
                tf.addfile(ti, io.BytesIO(payload))
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif kind == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = payload
                tf.addfile(ti)
    return buf.getvalue()


def read_all(data):
    tr = TarReader(io.BytesIO(data))
    out = []
    while True:
        m = tr.next()
        if m is None:
            return out
        content = tr.read_all() if m.kind == REGULAR and len(out) % 2 == 0 else b"".join(tr.chunks(7)) if m.kind == REGULAR else None
        out.append((m.name, m.kind, m.mode, m.size, content))


MEMBERS = [
    (".runctl-sync/control.json", "file", b'{"delete": []}', 0o644),
    ("pkg", "dir", None, 0o755),
    ("pkg/a.py", "file", b"print(1)\n", 0o644),
    ("run.sh", "file", b"#!/bin/sh\n" * 100, 0o755),
    ("empty.txt", "file", b"", 0o600),
    (LONG, "file", b"x" * 513, 0o644),
    ("link", "symlink", "pkg/a.py", 0o777),
]


class ReadsWhatTarfileWrites(unittest.TestCase):
    def check(self, fmt):
        got = read_all(archive(MEMBERS, fmt))
        want = []
        for i, (name, kind, payload, mode) in enumerate(MEMBERS):
            if kind == "file":
                want.append((name, REGULAR, mode, len(payload), payload))
            elif kind == "dir":
                want.append((name, DIRECTORY, mode, 0, None))
            else:
                want.append((name, "2", mode, 0, None))
        self.assertEqual(got, want)

    def test_read_view_gives_the_content_without_its_padding(self):
        tr = TarReader(io.BytesIO(archive(MEMBERS, tarfile.PAX_FORMAT)))
        got = []
        while True:
            m = tr.next()
            if m is None:
                break
            if m.kind == REGULAR:
                view = tr.read_view()
                self.assertIsInstance(view, memoryview)
                got.append((m.name, bytes(view)))
        self.assertEqual(got, [(name, payload) for name, kind, payload, _ in MEMBERS if kind == "file"])

    def test_gnu(self):
        self.check(tarfile.GNU_FORMAT)  # long names as ././@LongLink records

    def test_pax(self):
        self.check(tarfile.PAX_FORMAT)  # long names as pax "path" records

    def test_ustar_splits_long_names_into_prefix_and_name(self):
        name = "a" * 120 + "/b.py"
        got = read_all(archive([(name, "file", b"1", 0o644)], tarfile.USTAR_FORMAT))
        self.assertEqual(got, [(name, REGULAR, 0o644, 1, b"1")])

    def test_pax_non_ascii_names(self):
        got = read_all(archive([("données/é.py", "file", b"z", 0o644)], tarfile.PAX_FORMAT))
        self.assertEqual(got[0][0], "données/é.py")

    def test_first_bytes_already_read(self):
        data = archive(MEMBERS[:3], tarfile.GNU_FORMAT)
        tr = TarReader(io.BytesIO(data[700:]), data[:700])
        names = []
        while True:
            m = tr.next()
            if m is None:
                break
            names.append(m.name)
        self.assertEqual(names, [m[0] for m in MEMBERS[:3]])


class Refuses(unittest.TestCase):
    def test_a_stream_cut_inside_a_member(self):
        data = archive([("a.bin", "file", b"a" * 5000, 0o644)], tarfile.GNU_FORMAT)
        tr = TarReader(io.BytesIO(data[:2048]))
        self.assertEqual(tr.next().name, "a.bin")
        with self.assertRaises(TarFormatError):
            tr.read_all()

    def test_a_stream_cut_between_members(self):
        data = archive([("a.py", "file", b"a", 0o644), ("b.py", "file", b"b", 0o644)], tarfile.GNU_FORMAT)
        tr = TarReader(io.BytesIO(data[:1024]))  # a.py whole; no end-of-archive block
        self.assertEqual(tr.next().name, "a.py")
        self.assertEqual(tr.read_all(), b"a")
        with self.assertRaisesRegex(TarFormatError, "end-of-archive"):
            tr.next()

    def test_a_bad_checksum(self):
        data = bytearray(archive([("a.py", "file", b"a", 0o644)], tarfile.GNU_FORMAT))
        data[0:1] = b"b"
        with self.assertRaisesRegex(TarFormatError, "checksum"):
            TarReader(io.BytesIO(bytes(data))).next()

    def test_an_empty_stream(self):
        with self.assertRaises(TarFormatError):
            TarReader(io.BytesIO(b"")).next()


if __name__ == "__main__":
    unittest.main()

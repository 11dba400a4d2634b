"""A small sequential reader of the tar streams that sync sends (ustar, pax and GNU long names).

The standard library's tarfile costs about 0.1 ms of Python per member in stream mode, which is most
of applying a 2,000-file sync; this reads one 512-byte header per member and slices it. It only
reports what a sync needs (name, kind, mode, size) and leaves every policy (safe paths, allowed
kinds) to the caller. Unlike tarfile it insists on the end-of-archive block: a stream cut between
two members is an error, never a shorter but "complete" archive.
"""

BLOCK = 512

# Kinds reported to the caller; anything else keeps its typeflag character.
REGULAR = "file"
DIRECTORY = "dir"

_REGULAR_FLAGS = (b"0", b"\x00", b"7")  # 7: contiguous file, a regular file everywhere else


class TarFormatError(Exception):
    """The stream is not a well-formed tar (bad header, checksum, or cut short)."""


class Member(object):
    __slots__ = ("name", "kind", "mode", "size")

    def __init__(self, name, kind, mode, size):
        self.name = name
        self.kind = kind
        self.mode = mode
        self.size = size


def _number(field, what):
    """A numeric header field: octal ASCII (NUL/space padded) or GNU base-256."""
    if field[:1] and field[0] & 0x80:
        if field[0] == 0xFF:
            raise TarFormatError("negative %s" % what)
        value = field[0] & 0x7F
        for b in field[1:]:
            value = (value << 8) | b
        return value
    text = field.split(b"\x00", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarFormatError("bad %s field %r" % (what, field))


def _checksum_ok(header):
    stored = _number(header[148:156], "checksum")
    # The checksum field counts as eight spaces; some writers sum signed bytes.
    unsigned = sum(header[:148]) + 256 + sum(header[156:])
    if stored == unsigned:
        return True
    signed = sum(b - 256 if b > 127 else b for b in header[:148] + header[156:]) + 256
    return stored == signed


def _pax_records(data):
    """{key: value} of a pax extended header ("LEN key=value\\n" records)."""
    out = {}
    pos = 0
    while pos < len(data):
        if data[pos:pos + 1] == b"\x00":
            break
        sp = data.find(b" ", pos)
        if sp < 0:
            raise TarFormatError("bad pax record")
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise TarFormatError("bad pax record length")
        if length <= 0 or pos + length > len(data):
            raise TarFormatError("bad pax record length")
        record = data[sp + 1:pos + length]
        if not record.endswith(b"\n") or b"=" not in record:
            raise TarFormatError("bad pax record")
        key, value = record[:-1].split(b"=", 1)
        out[key.decode("utf-8", "surrogateescape")] = value
        pos += length
    return out


class TarReader(object):
    """Iterates the members of a tar read from a binary stream, one at a time: after `next()`
    returns a file member, its content must be consumed with `read_all()` or `chunks()` (or skipped
    with `skip()`) before the next call."""

    def __init__(self, stream, first=b""):
        """`first`: bytes already read from the start of `stream` (to tell an empty stream apart)."""
        self._stream_read = stream.read
        self._first = first
        self._read = self._read_first if first else stream.read
        self._left = 0  # content bytes of the current member not yet read
        self._pad = 0  # padding after them

    def _read_first(self, n):
        data, self._first = self._first[:n], self._first[n:]
        if not self._first:
            self._read = self._stream_read
        if len(data) < n:
            data += self._stream_read(n - len(data))
        return data

    def _exact(self, n):
        data = self._read(n)
        if len(data) != n:
            # BufferedReader.read returns short only at end of stream.
            raise TarFormatError("unexpected end of the stream")
        return data

    def _content(self, size):
        data = self._exact(size + (-size % BLOCK))
        return data[:size]

    def next(self):
        """The next member, or None at the end-of-archive block."""
        if self._left or self._pad:
            self.skip()
        pax = {}
        long_name = None
        while True:
            header = self._read(BLOCK)
            if len(header) != BLOCK:
                raise TarFormatError("the stream ended without the end-of-archive block")
            if header == b"\x00" * BLOCK:
                return None
            if not _checksum_ok(header):
                raise TarFormatError("header checksum mismatch")
            flag = header[156:157]
            size = _number(header[124:136], "size")
            if flag in (b"x", b"g", b"L", b"K"):
                if size > 16 << 20:
                    raise TarFormatError("extended header of %d bytes" % size)
                data = self._content(size)
                if flag == b"x":
                    pax.update(_pax_records(data))
                elif flag == b"L":
                    long_name = data.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
                continue  # g: global defaults, K: long link name; neither matters here
            break
        if "path" in pax:
            name = pax["path"].decode("utf-8", "surrogateescape")
        elif long_name is not None:
            name = long_name
        else:
            name = header[0:100].split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
            prefix = header[345:500].split(b"\x00", 1)[0]
            if header[257:263] == b"ustar\x00" and prefix:
                name = prefix.decode("utf-8", "surrogateescape") + "/" + name
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError:
                raise TarFormatError("bad pax size")
        mode = _number(header[100:108], "mode")
        if flag in _REGULAR_FLAGS and not (flag == b"\x00" and name.endswith("/")):
            kind = REGULAR
        elif flag == b"5" or flag == b"\x00":
            kind = DIRECTORY
            name = name.rstrip("/") or name  # as tarfile reads it
        else:
            kind = flag.decode("latin-1")  # links, devices...: the caller refuses them
        # Only regular files carry content here (tarfile reads a folder's size field as 0 too).
        if kind != REGULAR:
            size = 0
        self._left = size
        self._pad = -size % BLOCK
        return Member(name, kind, mode, size)

    def read_all(self):
        """The whole content of the current member (for small files and control members)."""
        data = self._content(self._left) if self._left or self._pad else b""
        self._left = self._pad = 0
        return data

    def read_view(self):
        """Like `read_all`, as a memoryview of the block-padded bytes read, without copying the
        content out of them (a sync's small files go straight to os.write and the hash)."""
        if not (self._left or self._pad):
            return memoryview(b"")
        size = self._left
        data = self._exact(size + self._pad)
        self._left = self._pad = 0
        return memoryview(data)[:size]

    def chunks(self, size):
        """The content of the current member in chunks of at most `size` bytes."""
        while self._left:
            n = min(size, self._left)
            data = self._exact(n)
            self._left -= n
            yield data
        if self._pad:
            self._exact(self._pad)
            self._pad = 0

    def skip(self):
        for _ in self.chunks(1 << 20):
            pass

"""Checkpoint storage in a local (or mounted) folder."""

import hashlib
import os
import shutil

from .constants import CHUNK
from .fsutil import _unlink_quiet, atomic_write, safe_rel, tmp_name


class StorageError(Exception):
    pass


class SourceChanged(StorageError):
    """The file changed size while it was read for an upload: what was read is not one version of it."""


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

    def put_file(self, key, src, on_bytes=None):
        """Copy src to key atomically; returns (size, sha256) of exactly the bytes stored. on_bytes(n)
        is told of each chunk copied (progress)."""
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
                    if on_bytes is not None:
                        on_bytes(len(b))
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
        except (FileNotFoundError, NotADirectoryError):
            # NotADirectoryError: a folder on the key's path is a file, so the key cannot exist (a
            # broken storage root then fails at the first write, as a warning, not here).
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

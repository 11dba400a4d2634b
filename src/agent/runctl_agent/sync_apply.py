"""`sync`, `sync-apply` and `sync-apply --staged`: applying a sync bundle safely."""

import io
import os
import stat
import sys

from . import jsonlite
from .constants import CHUNK, EXIT_ERROR, EXIT_OK, EXIT_UNSAFE, EXIT_USAGE, EXIT_VERIFY, SYNC_SMALL_FILE, UsageError
from .fsutil import _unlink_quiet, print_json, safe_rel
from .manifest import load_hash_cache, save_hash_cache, scan_manifest
from .tar_reader import BLOCK, DIRECTORY, REGULAR, TarFormatError, TarReader

CONTROL_MEMBER = ".runctl-sync/control.json"
# With {"expectTrailer": true} in the control member, `expect` comes last, in this member: the
# client hashes files while it sends them, so it knows the full manifest only at the end.
EXPECT_MEMBER = ".runctl-sync/expect.json"


class UnsafePath(Exception):
    pass


class BadStream(Exception):
    """The stream is a tar but not a sync bundle (exit 2)."""


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


def _rmtree(path):
    import shutil  # rarely needed, and ~4 ms to import

    shutil.rmtree(path)


def _current_umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _Applier(object):
    """Writes the members of one sync stream below root and remembers what it wrote."""

    def __init__(self, root):
        import hashlib  # only a sync that writes needs it (~10 ms a start)

        self.sha256 = hashlib.sha256
        self.root = root
        self.prepared = {}
        self.umask = _current_umask()
        # rel -> (ino, size, mtime_ns, sha256) of each file written: verification trusts these
        # hashes (computed from exactly the bytes written) while the file is still that inode.
        self.written = {}
        # Temporary names: this process's id and a random token once, then a counter (O_EXCL
        # refuses any clash), instead of two system calls per file for fsutil.tmp_name.
        self.tmp_tag = "%d-%s" % (os.getpid(), os.urandom(4).hex())
        self.tmp_count = 0

    def parent_of(self, parts, rel):
        # Most members share their folder with the previous one: check each folder once.
        key = tuple(parts[:-1])
        parent = self.prepared.get(key)
        if parent is None:
            parent = self.prepared[key] = _prepare_dirs(self.root, parts[:-1], rel)
        return parent

    def write(self, target, rel, chunks, mode):
        """Write one synced file atomically (temporary name, then rename) and record its hash.
        No fsync, as rsync: a crash can lose the newest writes, and the next sync's manifest then
        shows them missing or different and sends them again."""
        d, b = os.path.split(target)
        self.tmp_count += 1
        tmp = os.path.join(d, ".%s.tmp-%s-%d" % (b[:80], self.tmp_tag, self.tmp_count))
        h = self.sha256()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            for b in chunks:
                h.update(b)
                view = memoryview(b)
                while view:
                    view = view[os.write(fd, view):]
            if mode & ~self.umask != mode:
                os.fchmod(fd, mode)  # the umask took bits the file must have
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            _unlink_quiet(tmp)
            raise
        os.close(fd)
        try:
            os.replace(tmp, target)
        except OSError:
            if not os.path.isdir(target) or os.path.islink(target):
                _unlink_quiet(tmp)
                raise
            _rmtree(target)  # a folder became a file
            os.replace(tmp, target)
        self.written[rel] = (st.st_ino, st.st_size, st.st_mtime_ns, h.hexdigest())


def _read_json_member(tr, what):
    try:
        value = jsonlite.loads(tr.read_all().decode("utf-8"))
        if not isinstance(value, dict):
            raise ValueError("not an object")
        return value
    except ValueError as e:
        raise BadStream("%s is invalid: %s" % (what, e))


def _apply(root, tr, applier):
    """Apply a sync bundle read by `tr`: returns (control, expect, deleted). Raises UnsafePath,
    BadStream or TarFormatError; files written before the error stay (each one complete)."""
    try:
        m = tr.next()
    except TarFormatError as e:
        raise BadStream("stdin is not a tar stream: %s" % e)
    if m is None or m.name != CONTROL_MEMBER or m.kind != REGULAR:
        raise BadStream("the first tar member must be %s, got %r" % (CONTROL_MEMBER, None if m is None else m.name))
    control = _read_json_member(tr, "control.json")
    expect = control.get("expect")
    trailer = control.get("expectTrailer") is True
    while True:
        m = tr.next()
        if m is None:
            break
        if trailer and m.name == EXPECT_MEMBER and m.kind == REGULAR:
            expect = _read_json_member(tr, "expect.json").get("expect")
            if tr.next() is not None:
                raise BadStream("%s must be the last member" % EXPECT_MEMBER)
            trailer = False
            break
        rel = safe_rel(m.name)
        if rel is None:
            if m.kind == DIRECTORY and m.name in (".", "./"):
                continue  # "./" itself
            raise UnsafePath("%s: absolute or climbing path" % m.name)
        if m.kind not in (REGULAR, DIRECTORY):
            raise UnsafePath("%s: not a regular file or folder" % m.name)
        parts = rel.split("/")
        if m.kind == DIRECTORY:
            _prepare_dirs(root, parts, rel)
            continue
        target = os.path.join(applier.parent_of(parts, rel), parts[-1])
        mode = m.mode & 0o777  # permission bits only: setuid/setgid from a tar are never applied
        if m.size <= SYNC_SMALL_FILE:
            # Read whole before the file is created: a stream cut inside it leaves nothing behind.
            applier.write(target, rel, (tr.read_view(),), mode)
        else:
            applier.write(target, rel, tr.chunks(CHUNK), mode)
    if trailer:
        raise BadStream("the stream ended without %s" % EXPECT_MEMBER)
    deleted = 0
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
            _rmtree(target)
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
    return expect if isinstance(expect, dict) else {}, deleted


def _verify(files, expect):
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
    return mismatches


def apply_and_verify(root, stream, cache, first=b""):
    """Apply the sync tar read from `stream` (after the bytes `first`, already read) below root,
    then check the whole folder against the stream's `expect`. Prints the reply and returns the
    exit code: 0 verified, 6 mismatches, 7 unsafe path, 2 not a sync bundle, 1 bad tar."""
    applier = _Applier(root)
    tr = TarReader(stream, first)
    try:
        expect, deleted = _apply(root, tr, applier)
    except UnsafePath as e:
        print_json({"ok": False, "error": "unsafe path in tar stream: %s" % e})
        return EXIT_UNSAFE
    except BadStream as e:
        print_json({"ok": False, "error": str(e)})
        return EXIT_USAGE
    except TarFormatError as e:
        print_json({"ok": False, "error": "bad tar stream: %s" % e})
        return EXIT_ERROR
    written = len(applier.written)
    files, new_cache = scan_manifest(root, cache, applier.written)
    save_hash_cache(root, new_cache)
    mismatches = _verify(files, expect)
    if mismatches:
        print_json({"ok": False, "mismatches": mismatches, "written": written, "deleted": deleted})
        return EXIT_VERIFY
    print_json({"ok": True, "written": written, "deleted": deleted})
    return EXIT_OK


def _stdin_reader():
    """stdin for a sync tar: a 1 MiB buffer (a header costs no read of its own) and, when it is a
    pipe (sshd's), a 1 MiB pipe, so the sender can run ahead instead of waking us per 64 KiB."""
    fd = sys.stdin.fileno()
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (ImportError, OSError, ValueError):
        pass  # not a pipe, or a system limit below 1 MiB: the default size works too
    return io.open(fd, "rb", buffering=1 << 20, closefd=False)


def _open_root(root):
    root = os.path.abspath(root)
    os.makedirs(root, exist_ok=True)
    return root


def cmd_sync_apply(root, stream=None):
    """`sync-apply DIR`: a sync tar on stdin (or `stream`)."""
    root = _open_root(root)
    stream = stream if stream is not None else _stdin_reader()
    first = stream.read(BLOCK)
    if not first:
        print_json({"ok": False, "error": "empty tar stream: %s is missing" % CONTROL_MEMBER})
        return EXIT_USAGE
    return apply_and_verify(root, stream, load_hash_cache(root), first)


def cmd_sync(root):
    """`sync DIR`: one call for a whole sync over a two-way byte stream. Prints the folder's
    manifest as one line ({"files": ...}) at once, then reads stdin: nothing (the client found no
    difference: {"ok": true, "written": 0, "deleted": 0}) or a sync tar, applied as `sync-apply`
    does, with its reply as the second line."""
    root = _open_root(root)
    cache = load_hash_cache(root)
    files, new_cache = scan_manifest(root, cache)
    print_json({"files": files})
    # While the client compares: keep the cache in step with the folder (skipped when unchanged).
    save_hash_cache(root, new_cache, cache)
    stream = _stdin_reader()
    first = stream.read(BLOCK)
    if not first:
        print_json({"ok": True, "written": 0, "deleted": 0})
        return EXIT_OK
    return apply_and_verify(root, stream, new_cache, first)


def cmd_sync_apply_staged(root):
    """sync-apply with the tar staged in storage (machines reached without a byte stream, such as
    SSM): stdin is JSON {"storage": descriptor, "key": key, "secrets": {...} or null}."""
    from .spec import check_launch_secrets
    from .storage_dir import StorageError
    from .storage_s3 import open_storage

    try:
        req = jsonlite.loads(sys.stdin.buffer.read().decode("utf-8"))
        desc, key = req["storage"], req["key"]
        creds = check_launch_secrets(req.get("secrets")) if req.get("secrets") is not None else None
        if not isinstance(key, str) or safe_rel(key) is None:
            raise ValueError("key must be a relative storage key")
    except (ValueError, KeyError, TypeError, UsageError) as e:
        print_json({"ok": False, "error": "staged sync-apply needs {storage, key, secrets?} on stdin: %s" % e})
        return EXIT_USAGE
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    staged = os.path.join(parent, ".runctl-sync-staged-%s.tar" % os.urandom(6).hex())
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

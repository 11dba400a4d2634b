"""`sync-apply` and `sync-apply-staged`: applying a sync bundle safely."""

import collections
import hashlib
import json
import os
import secrets
import shutil
import stat
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor

from .constants import CHUNK, EXIT_ERROR, EXIT_OK, EXIT_UNSAFE, EXIT_USAGE, EXIT_VERIFY, SYNC_SMALL_FILE, SYNC_WRITERS, UsageError
from .fsutil import _unlink_quiet, print_json, safe_rel, tmp_name
from .manifest import build_manifest, load_hash_cache
from .spec import check_launch_secrets
from .storage_dir import StorageError
from .storage_s3 import open_storage


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

"""`manifest`: the sync manifest of a folder, with its hash cache."""

import os
import stat

from . import jsonlite
from .constants import EXIT_OK
from .fsutil import atomic_write, print_json, read_json_file, sha256_file


def cache_path_for(root):
    root = os.path.abspath(root)
    return os.path.join(os.path.dirname(root), "." + os.path.basename(root) + ".hashcache.json")


# Version 2: each entry is [size, "mtime_ns", "ctime_ns", sha256], the times as strings (nanoseconds
# since 1970 exceed a JS number's exact range); version 1 had an object per entry, which loaded and
# compared slower. Another version is an empty cache, so an upgrade re-hashes once.
HASH_CACHE_VERSION = 2


def load_hash_cache(root):
    c = read_json_file(cache_path_for(root))
    if isinstance(c, dict) and c.get("version") == HASH_CACHE_VERSION and isinstance(c.get("entries"), dict):
        return c["entries"]
    return {}


def save_hash_cache(root, entries, loaded=None):
    """Write the cache unless it equals what was loaded (a no-op sync then writes nothing)."""
    if loaded is not None and entries == loaded:
        return
    try:
        atomic_write(cache_path_for(root), jsonlite.dumps({"version": HASH_CACHE_VERSION, "entries": entries}).encode("utf-8"))
    except OSError:
        pass  # a read-only parent only costs re-hashing next time


def _regular_files(root):
    """(rel, lstat) of every regular file below root. os.scandir gives each entry's type without a
    stat call, so folders cost one listing and files one lstat. Unreadable folders are skipped, as
    os.walk does; symlinks and special files are not files here."""
    stack = [("", root)]
    while stack:
        prefix, path = stack.pop()
        try:
            it = os.scandir(path)
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    if e.is_dir(follow_symlinks=False):
                        stack.append((prefix + e.name + "/", e.path))
                        continue
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue  # vanished meanwhile
                if stat.S_ISREG(st.st_mode):
                    yield prefix + e.name, st


def scan_manifest(root, cache, written=None):
    """({rel: {size, mode, sha256}}, new cache entries) of every regular file below root. A hash is
    reused from the cache when size, mtime_ns and ctime_ns all match (ctime too: an edit that
    restores the mtime, as `touch -r` or `cp -p` do, still changes the ctime), or from `written`,
    {rel: (ino, size, mtime_ns, sha256)} of the files this process has just written and hashed
    (their ctime moved when they were renamed into place)."""
    files = {}
    new_cache = {}
    if not os.path.isdir(root):
        return files, new_cache
    for rel, st in _regular_files(root):
        size = st.st_size
        mtime = str(st.st_mtime_ns)
        ctime = str(st.st_ctime_ns)
        c = cache.get(rel)
        w = written.get(rel) if written else None
        if w is not None and w[0] == st.st_ino and w[1] == size and w[2] == st.st_mtime_ns:
            digest = w[3]
        elif type(c) is list and len(c) == 4 and c[0] == size and c[1] == mtime and c[2] == ctime and type(c[3]) is str and c[3]:
            digest = c[3]
        else:
            try:
                digest = sha256_file(os.path.join(root, rel))
            except FileNotFoundError:
                continue  # vanished meanwhile
        files[rel] = {"size": size, "mode": stat.S_IMODE(st.st_mode), "sha256": digest}
        new_cache[rel] = [size, mtime, ctime, digest]
    return files, new_cache


def build_manifest(root, cache=None):
    """{rel: {size, mode, sha256}} of every regular file below root, with the cache rewritten to
    what is there now (only when it changed)."""
    root = os.path.abspath(root)
    loaded = load_hash_cache(root) if cache is None else cache
    files, new_cache = scan_manifest(root, loaded)
    if os.path.isdir(root):
        save_hash_cache(root, new_cache, loaded)
    return files


def cmd_manifest(root):
    print_json({"files": build_manifest(root)})
    return EXIT_OK

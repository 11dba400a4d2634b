"""`manifest`: the sync manifest of a folder, with its hash cache."""

import json
import os
import stat

from .constants import EXIT_OK
from .fsutil import atomic_write, print_json, read_json_file, sha256_file


def cache_path_for(root):
    root = os.path.abspath(root)
    return os.path.join(os.path.dirname(root), "." + os.path.basename(root) + ".hashcache.json")


def load_hash_cache(root):
    c = read_json_file(cache_path_for(root))
    if isinstance(c, dict) and c.get("version") == 1 and isinstance(c.get("entries"), dict):
        return c["entries"]
    return {}


def save_hash_cache(root, entries, loaded=None):
    """Write the cache unless it equals what was loaded (a no-op sync then writes nothing)."""
    if loaded is not None and entries == loaded:
        return
    try:
        atomic_write(cache_path_for(root), json.dumps({"version": 1, "entries": entries}, separators=(",", ":")).encode("utf-8"))
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
        # mtimeNs is stored as a string: nanoseconds since 1970 exceed a JS number's exact range.
        mtime = str(st.st_mtime_ns)
        ctime = str(st.st_ctime_ns)
        c = cache.get(rel)
        w = written.get(rel) if written else None
        if w is not None and w[0] == st.st_ino and w[1] == size and w[2] == st.st_mtime_ns:
            digest = w[3]
        elif isinstance(c, dict) and c.get("size") == size and c.get("mtimeNs") == mtime and c.get("ctimeNs") == ctime and c.get("sha256"):
            digest = c["sha256"]
        else:
            try:
                digest = sha256_file(os.path.join(root, rel))
            except FileNotFoundError:
                continue  # vanished meanwhile
        files[rel] = {"size": size, "mode": stat.S_IMODE(st.st_mode), "sha256": digest}
        new_cache[rel] = {"size": size, "mtimeNs": mtime, "ctimeNs": ctime, "sha256": digest}
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

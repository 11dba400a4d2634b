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


def build_manifest(root, cache=None):
    """{rel: {size, mode, sha256}} of every regular file below root; hashes reused from the cache
    when path, size and mtime_ns all match, and the cache rewritten with what is there now."""
    root = os.path.abspath(root)
    if cache is None:
        cache = load_hash_cache(root)
    files = {}
    new_cache = {}
    if not os.path.isdir(root):
        return files
    for dirpath, dirs, names in os.walk(root):
        dirs.sort()
        for fn in sorted(names):
            full = os.path.join(dirpath, fn)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            c = cache.get(rel)
            # mtimeNs is stored as a string: nanoseconds since 1970 exceed a JS number's exact range.
            # ctime too: an edit that restores the mtime (touch -r, cp -p) still changes the ctime.
            if (isinstance(c, dict) and c.get("size") == st.st_size and c.get("mtimeNs") == str(st.st_mtime_ns)
                    and c.get("ctimeNs") == str(st.st_ctime_ns) and c.get("sha256")):
                digest = c["sha256"]
            else:
                digest = sha256_file(full)
            files[rel] = {"size": st.st_size, "mode": stat.S_IMODE(st.st_mode), "sha256": digest}
            new_cache[rel] = {"size": st.st_size, "mtimeNs": str(st.st_mtime_ns), "ctimeNs": str(st.st_ctime_ns), "sha256": digest}
    try:
        atomic_write(cache_path_for(root), json.dumps({"version": 1, "entries": new_cache}, separators=(",", ":")).encode("utf-8"))
    except OSError:
        pass  # a read-only parent only costs re-hashing next time
    return files


def cmd_manifest(root):
    print_json({"files": build_manifest(root)})
    return EXIT_OK

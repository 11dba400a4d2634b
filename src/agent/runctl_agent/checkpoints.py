"""Checkpoints: the watcher (scan, settle, commit a generation, retention, LATEST) and listing generations."""

import json
import os
import re
import stat
import threading
import time
import traceback

from .constants import COMMIT_TRIES
from .fsutil import now_iso, read_json_file, sha256_file
from .s3util import StorageRetriesExhausted
from .storage_dir import SourceChanged


CKPT_SKIP_SUFFIXES = (".tmp", ".partial", "~", ".done")


def is_candidate(name):
    return not name.startswith(".") and not name.endswith(CKPT_SKIP_SUFFIXES)


def entry_signature(path):
    """(relpath, size, mtime_ns) of every regular file of a checkpoint entry; None if not one.

    A single-file checkpoint has relpath "". Symlinks are skipped so a link can never pull files
    from outside the checkpoint into storage.
    """
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISREG(st.st_mode):
        return (("", st.st_size, st.st_mtime_ns),)
    if not stat.S_ISDIR(st.st_mode):
        return None
    sig = []
    for dirpath, dirs, files in os.walk(path):
        dirs.sort()
        for fn in files:
            full = os.path.join(dirpath, fn)
            try:
                fst = os.lstat(full)
            except OSError:
                continue
            if stat.S_ISREG(fst.st_mode):
                rel = os.path.relpath(full, path).replace(os.sep, "/")
                sig.append((rel, fst.st_size, fst.st_mtime_ns))
    sig.sort()
    return tuple(sig) or None


def step_of(ckpt_dir, name):
    """`step` from `<name>.done` JSON if present, else the last run of digits in the name."""
    done = read_json_file(os.path.join(ckpt_dir, name + ".done"))
    if isinstance(done, dict) and isinstance(done.get("step"), int) and not isinstance(done.get("step"), bool):
        return done["step"]
    digits = re.findall(r"\d+", name)
    return int(digits[-1]) if digits else None


GEN_RE = re.compile(r"^g([0-9]+)$")


def gen_name(seq):
    """The storage folder of one commit of a checkpoint: `g` + its commit seq, zero-padded."""
    return "g%08d" % seq


def ckpt_name_prefix(run_id, name):
    return "%s/checkpoints/%s/" % (run_id, name)


def ckpt_gen_prefix(run_id, name, seq):
    """`<run>/checkpoints/<name>/<gen>/`: holds `manifest.json` and `files/<path>` of one commit."""
    return "%s/checkpoints/%s/%s/" % (run_id, name, gen_name(seq))


def done_marker_fresh(ckpt_dir, name, sig):
    """`<name>.done` exists and is at least as new as every file of the entry: a marker left from an
    earlier version of the entry does not vouch for a rewrite in progress."""
    try:
        st = os.stat(os.path.join(ckpt_dir, name + ".done"))
    except OSError:
        return False
    return st.st_mtime_ns >= max(s[2] for s in sig)


class CheckpointChanged(Exception):
    """The entry changed while it was being copied: not an error, it is committed once it settles."""


class CheckpointCorrupt(Exception):
    pass


class CheckpointMissing(CheckpointCorrupt):
    """A file the manifest lists is not in storage (pruned, replaced, or lost): see _restore."""

    def __init__(self, message, manifest_key):
        CheckpointCorrupt.__init__(self, message)
        self.manifest_key = manifest_key


class CheckpointWatcher:
    """Polls the checkpoint folder and commits finished entries to storage (docs/agent-protocol.md)."""

    def __init__(self, sup, storage, run_id, cfg, hp_hash):
        self.sup = sup
        self.storage = storage
        self.run_id = run_id
        self.dir = cfg["dir"]
        self.settle_s = max(0, cfg["settleMs"]) / 1000.0
        self.poll_s = max(10, cfg["pollMs"]) / 1000.0
        keep = cfg.get("keep")
        # keep < 1 would delete even the newest checkpoint; treat it as 1.
        self.keep = None if keep is None else max(1, int(keep))
        self.hp_hash = hp_hash
        self.known = {}  # name -> signature that needs no commit (committed, restored, or failed)
        self.pending = {}  # name -> (signature, monotonic time it was first seen like that)
        # name -> signature seen unchanged for settleMs while the trainer was alive: after a crash
        # only these (and entries with a fresh .done marker) may still be committed.
        self.settled = {}
        self.stale = {}  # name -> seqs of its generations to delete besides the committed one
        self.committed = []  # [{"name", "seq", "step", "files"}] of this run in storage, oldest first
        self.next_seq = 1
        # What LATEST names, and when the trainer finished writing it (newest mtime of its files; None:
        # not written by this agent). Commits can finish out of the order the trainer wrote the entries
        # in (a `.done` entry goes at once, an older one waits to settle): LATEST only moves forward.
        self.latest_name = None
        self.latest_written = None
        self.stop_event = threading.Event()
        self.thread = None
        self._load_existing()

    def _load_existing(self):
        """A run restarted with the same runId continues its seq and retention from storage."""
        gens = {}
        for m in list_manifests(self.storage, self.run_id, gens_out=gens):
            self.committed.append({"name": m["name"], "seq": m["seq"], "step": m.get("step"), "files": m.get("files") or []})
        self.committed.sort(key=lambda c: c["seq"])
        if self.committed:
            try:
                named = (self.storage.get_bytes(self.run_id + "/LATEST") or b"").decode("utf-8", "replace").strip()
            except Exception as e:  # unreadable now: the first commit of this agent rewrites LATEST
                self.sup.debug("reading LATEST failed: %s" % e)
                named = None
            if any(c["name"] == named for c in self.committed):
                self.latest_name = named
        # Generations an earlier agent left behind (an upload cut short, or an old generation not yet
        # removed): never reused, and removed with the next commit of their name.
        live = dict((c["name"], c["seq"]) for c in self.committed)
        for name, seqs in gens.items():
            stale = set(q for q in seqs if q != live.get(name))
            if stale:
                self.stale[name] = stale
        every = [q for seqs in gens.values() for q in seqs]
        if every:
            self.next_seq = max(every) + 1

    def mark_known(self, name, sig):
        if sig:
            self.known[name] = sig

    def start(self):
        self.thread = threading.Thread(target=self._loop, name="ckpt-watcher", daemon=True)
        self.thread.start()

    def stop(self, poll=None):
        """Stops the loop and waits for a commit under way (poll, if given, runs every 0.1 s meanwhile)."""
        self.stop_event.set()
        if self.thread:
            while self.thread.is_alive():
                if poll is not None:
                    poll()
                self.thread.join(0.1)

    def _loop(self):
        while not self.stop_event.is_set():
            try:
                self.scan(final=False)
            except Exception:
                self.sup.debug("checkpoint scan failed:\n" + traceback.format_exc())
            self.stop_event.wait(self.poll_s)

    def scan(self, final, should_stop=None, drain=False, clean=True, exit_text=None):
        """One pass. final: the trainer has exited; if clean (exit status 0) every candidate counts as
        finished, else only entries that settled while it lived or have a fresh `.done` marker do, and
        each other one gets a `warning` (docs/checkpoints.md). drain: a pass of the main thread after
        stop(), which commits what is finished all the same."""
        try:
            names = [n for n in os.listdir(self.dir) if is_candidate(n)]
        except FileNotFoundError:
            return
        found = []
        for name in names:
            sig = entry_signature(os.path.join(self.dir, name))
            if sig:
                found.append((max(s[2] for s in sig), name, sig))
        # Oldest first, so seq follows the order the trainer wrote them in.
        found.sort()
        now = time.monotonic()
        for _mtime, name, sig in found:
            if should_stop and should_stop():
                return
            if not final and not drain and self.stop_event.is_set():
                return
            if self.known.get(name) == sig:
                self.pending.pop(name, None)
                continue
            prev = self.pending.get(name)
            if prev is None or prev[0] != sig:
                self.pending[name] = prev = (sig, now)
            done = done_marker_fresh(self.dir, name, sig)
            if final and not clean:
                if done or self.settled.get(name) == sig:
                    self._commit_with_retries(name, sig, final)
                else:
                    self._abandon(name, sig, exit_text or "did not exit cleanly")
                continue
            if final or done:
                self._commit_with_retries(name, sig, final)
            elif now - prev[1] >= self.settle_s and self.sup._trainer_running():
                # Checked after the signature was read: the entry stayed the same for settleMs while
                # its writer lived. A writer that died mid-write leaves an entry that merely looks
                # settled; that one is left to the final pass, which knows how the trainer exited.
                self.settled[name] = sig
                self._commit_with_retries(name, sig, final)

    def _abandon(self, name, sig, exit_text):
        """An entry still being written when the trainer died is never committed (docs/checkpoints.md)."""
        self.known[name] = sig
        self.pending.pop(name, None)
        self.sup.events.emit(
            "warning",
            message="checkpoint %s was not committed: the trainer %s while it was still being written "
            "(it had not stayed unchanged for settleMs=%d and has no fresh %s.done marker); the previous "
            "complete checkpoint stays the latest" % (name, exit_text, int(self.settle_s * 1000), name),
            checkpoint=name,
        )

    def _commit_with_retries(self, name, sig, final):
        err = None
        for attempt in range(COMMIT_TRIES):
            try:
                self.commit(name, sig)
                return
            except CheckpointChanged:
                self.pending.pop(name, None)
                return
            except Exception as e:
                err = e
                tries = attempt + 1
                self.sup.debug("commit of %s failed (try %d): %s" % (name, tries, traceback.format_exc()))
                if isinstance(e, StorageRetriesExhausted):
                    break  # the storage already retried this for its whole budget
                if attempt + 1 < COMMIT_TRIES:
                    time.sleep(0.5 * (2 ** attempt))
        self.sup.events.emit("warning", message="checkpoint %s was not committed after %d %s: %s" % (name, tries, "try" if tries == 1 else "tries", err))
        # Do not retry until the entry changes again; a retry loop would hammer broken storage.
        self.known[name] = sig
        self.pending.pop(name, None)

    def _stored(self, name):
        for c in self.committed:
            if c["name"] == name:
                return c
        return None

    def _same_as_stored(self, path, is_dir, rels, stored):
        by_path = {f.get("path"): f for f in stored.get("files") or []}
        if len(by_path) != len(rels):
            return False
        for rel in rels:
            src = os.path.join(path, rel) if is_dir else path
            f = by_path.get(rel if is_dir else os.path.basename(path))
            if not f or f.get("size") != os.path.getsize(src) or f.get("sha256") != sha256_file(src):
                return False
        return True

    def commit(self, name, sig):
        t0 = time.monotonic()
        path = os.path.join(self.dir, name)
        is_dir = sig[0][0] != ""
        rels = [s[0] for s in sig]
        stored = self._stored(name)
        if stored is not None and self._same_as_stored(path, is_dir, rels, stored):
            # Same bytes as the committed manifest (e.g. a restarted run): nothing to upload.
            self.known[name] = sig
            self.pending.pop(name, None)
            return
        # A new generation beside the committed one (a rewrite of `last.pt`): readers keep seeing the
        # old one until this manifest exists; the old one is removed only after LATEST moved on.
        seq = self.next_seq
        prefix = ckpt_gen_prefix(self.run_id, name, seq)
        files = []
        total = 0
        progress = self.sup.progress("checkpoint", sum(s[1] for s in sig), name)
        try:
            progress.add(0)
            for rel in rels:
                src = os.path.join(path, rel) if is_dir else path
                fpath = rel if is_dir else name
                try:
                    size, digest = self.storage.put_file(prefix + "files/" + fpath, src, on_bytes=progress.add)
                except SourceChanged:
                    raise CheckpointChanged()
                files.append({"path": fpath, "size": size, "sha256": digest})
                total += size
            if entry_signature(path) != sig:
                raise CheckpointChanged()
        except CheckpointChanged:
            progress.abandon()
            # No manifest was written, so nothing reads these. (After a storage error they stay: the
            # next try reuses this generation, and the next commit of the name removes leftovers.)
            try:
                self.storage.delete_prefix(prefix)
            except Exception:
                pass
            raise
        except BaseException:
            progress.abandon()
            raise
        manifest = {
            "version": 1,
            "runId": self.run_id,
            "name": name,
            "kind": "dir" if is_dir else "file",
            "step": step_of(self.dir, name),
            "seq": seq,
            "createdAt": now_iso(),
            "hyperparamsHash": self.hp_hash,
            "files": files,
            "totalBytes": total,
        }
        self.storage.put_bytes(prefix + "manifest.json", json.dumps(manifest, separators=(",", ":")).encode("utf-8"))
        written = max(s[2] for s in sig)
        if self.latest_written is None or written >= self.latest_written or self.latest_name == name:
            self.storage.put_bytes(self.run_id + "/LATEST", name.encode("utf-8"))
            self.latest_name, self.latest_written = name, written
        self.next_seq = seq + 1
        if stored is not None:
            self.stale.setdefault(name, set()).add(stored["seq"])
        self.committed = [c for c in self.committed if c["name"] != name]
        self.committed.append({"name": name, "seq": seq, "step": manifest["step"], "files": files})
        self.known[name] = sig
        self.pending.pop(name, None)
        self.sup.events.emit(
            "checkpoint",
            name=name,
            step=manifest["step"],
            commitSeq=seq,  # `seq` is the event's own number; this is the commit's (manifest seq)
            files=len(files),
            bytes=total,
            location=self.storage.location(prefix.rstrip("/")),
            durationMs=int((time.monotonic() - t0) * 1000),
        )
        # Only now, with the new manifest and LATEST in place, the older generations go.
        try:
            self._delete_stale(name)
        except Exception as e:
            # Harmless leftovers: readers take the highest generation; the next commit retries.
            self.sup.debug("removing older generations of %s failed: %s" % (name, e))
        self._retention()

    def _delete_stale(self, name):
        """Deletes the superseded generations of `name`: their manifests first (a generation stops
        existing for readers before its bytes go), then their files."""
        seqs = sorted(self.stale.get(name) or ())
        for q in seqs:
            self.storage.delete(ckpt_gen_prefix(self.run_id, name, q) + "manifest.json")
        for q in seqs:
            self.storage.delete_prefix(ckpt_gen_prefix(self.run_id, name, q))
            self.stale[name].discard(q)
        if not self.stale.get(name):
            self.stale.pop(name, None)

    def _retention(self):
        if self.keep is None:
            return
        while len(self.committed) > self.keep:
            # The oldest commit, never the one LATEST names (it may have been committed before a
            # checkpoint the trainer wrote earlier): LATEST never names a pruned checkpoint.
            old = next(c for c in self.committed if c["name"] != self.latest_name)
            try:
                # Every manifest of the name first, then everything under it.
                for q in sorted(self.stale.get(old["name"]) or ()) + [old["seq"]]:
                    self.storage.delete(ckpt_gen_prefix(self.run_id, old["name"], q) + "manifest.json")
                self.storage.delete_prefix(ckpt_name_prefix(self.run_id, old["name"]))
                self.stale.pop(old["name"], None)
            except Exception as e:
                self.sup.events.emit("warning", message="retention could not delete checkpoint %s: %s" % (old["name"], e))
                return
            self.committed.remove(old)


def _read_manifest(storage, key, name, seq):
    raw = storage.get_bytes(key)
    try:
        m = json.loads(raw.decode("utf-8")) if raw is not None else None
    except ValueError:
        m = None
    if isinstance(m, dict) and m.get("name") == name and m.get("seq") == seq:
        return m
    return None


def list_manifests(storage, run_id, name=None, gens_out=None):
    """The committed checkpoints of a run (of one name if given): per name, the manifest of its highest
    generation that has a readable one (`<run>/checkpoints/<name>/<gen>/manifest.json`). A generation
    without a manifest is an upload in progress or abandoned: it does not exist for readers.
    gens_out (a dict), if given, gets name -> every generation seq found, with a manifest or not."""
    prefix = ckpt_name_prefix(run_id, name) if name is not None else "%s/checkpoints/" % run_id
    base = "%s/checkpoints/" % run_id
    gens = {}  # name -> [seq]
    for key in storage.list(prefix):
        parts = key[len(base):].split("/")
        g = GEN_RE.match(parts[1]) if len(parts) >= 3 else None
        if g is None or (name is not None and parts[0] != name):
            continue
        if gens_out is not None:
            gens_out.setdefault(parts[0], set()).add(int(g.group(1)))
        if len(parts) != 3 or parts[2] != "manifest.json":
            continue
        gens.setdefault(parts[0], []).append(int(g.group(1)))
    out = []
    for n, seqs in gens.items():
        for seq in sorted(seqs, reverse=True):
            m = _read_manifest(storage, ckpt_gen_prefix(run_id, n, seq) + "manifest.json", n, seq)
            if m is not None:
                out.append(m)
                break
    return out

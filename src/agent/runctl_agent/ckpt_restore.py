"""Restoring a committed checkpoint generation into the run's checkpoint folder."""

import os
import secrets
import shutil

from .checkpoints import CheckpointCorrupt, CheckpointMissing, ckpt_gen_prefix
from .fsutil import safe_rel


def restore_checkpoint(storage, from_run, manifest, ckpt_dir):
    """Download one checkpoint into ckpt_dir/<name>, verifying every sha256; returns its path."""
    name = manifest.get("name")
    kind = manifest.get("kind")
    files = manifest.get("files")
    seq = manifest.get("seq")
    if not isinstance(name, str) or safe_rel(name) != name or "/" in name or kind not in ("file", "dir") or not isinstance(files, list) or not files \
            or not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise CheckpointCorrupt("checkpoint %r has an invalid manifest" % (name,))
    if kind == "file" and (len(files) != 1 or files[0].get("path") != name):
        raise CheckpointCorrupt("checkpoint %s has an invalid manifest (file kind)" % name)
    os.makedirs(ckpt_dir, exist_ok=True)
    staging = os.path.join(ckpt_dir, ".runctl-restore-%s-%s" % (name, secrets.token_hex(4)))
    os.makedirs(staging)
    try:
        for f in files:
            rel = safe_rel(f.get("path"))
            if rel is None:
                raise CheckpointCorrupt("checkpoint %s lists an unsafe path %r" % (name, f.get("path")))
            dest = os.path.join(staging, *rel.split("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            gen = ckpt_gen_prefix(from_run, name, manifest.get("seq"))
            key = gen + "files/" + rel
            size = f.get("size") if isinstance(f.get("size"), int) else None
            got = storage.get_file(key, dest, size, md5=False) if storage.kind == "s3" else storage.get_file(key, dest)
            if got is None:
                raise CheckpointMissing("checkpoint %s is corrupt: %s is missing" % (name, rel), gen + "manifest.json")
            if got[0] != f.get("size") or got[1] != f.get("sha256"):
                raise CheckpointCorrupt(
                    "checkpoint %s is corrupt: %s has sha256 %s (size %d), manifest says %s (size %s)"
                    % (name, rel, got[1], got[0], f.get("sha256"), f.get("size"))
                )
        target = os.path.join(ckpt_dir, name)
        if os.path.lexists(target):
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            else:
                os.unlink(target)
        if kind == "dir":
            os.rename(staging, target)
        else:
            os.rename(os.path.join(staging, name), target)
            os.rmdir(staging)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)

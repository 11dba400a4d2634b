"""spec.container: normalization and validation (the image the trainer runs in, and how)."""

import os
import re

from .constants import UsageError

# Where the run's folders appear inside the container (docs/containers.md).
CONTAINER_ROOT = "/runctl"
CODE_DIR = CONTAINER_ROOT + "/code"
CHECKPOINT_DIR = CONTAINER_ROOT + "/checkpoints"
DATA_DIR = CONTAINER_ROOT + "/data"
OUTPUT_DIR = CONTAINER_ROOT + "/outputs"
VENV_DIR = CONTAINER_ROOT + "/venvs"

RUNTIMES = ("docker", "podman")
PULL = ("missing", "always", "never")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:@+-]*$", re.IGNORECASE)
_NETWORK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SHM = re.compile(r"^[0-9]+[bkmg]?$", re.IGNORECASE)
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _abs_path(v, what):
    """An absolute, normalized path that --mount can carry (no comma, no NUL, no `..`)."""
    if not isinstance(v, str) or not v.startswith("/") or "\0" in v or "," in v or "\n" in v:
        raise UsageError("spec.container.%s must be an absolute path without commas" % what)
    if ".." in v.split("/"):
        raise UsageError("spec.container.%s must not contain '..'" % what)
    return os.path.normpath(v)


def normalize_container(v):
    """spec.container: null (no container) or the image and its options, defaults filled."""
    if v is None:
        return None
    if not isinstance(v, dict):
        raise UsageError("spec.container must be an object or null")
    image = v.get("image")
    if not isinstance(image, str) or not _IMAGE.match(image) or len(image) > 512:
        raise UsageError("spec.container.image must be an image reference such as python:3.11-slim")
    runtime = v.get("runtime") or "docker"
    if runtime not in RUNTIMES:
        raise UsageError("spec.container.runtime must be one of %s" % ", ".join(RUNTIMES))
    pull = v.get("pull") or "missing"
    if pull not in PULL:
        raise UsageError("spec.container.pull must be one of %s" % ", ".join(PULL))
    gpus = v.get("gpus", "auto")
    if gpus is None:
        gpus = "auto"
    if not (gpus in ("auto", "all", "none") or (isinstance(gpus, int) and not isinstance(gpus, bool) and gpus >= 1)):
        raise UsageError('spec.container.gpus must be "auto", "all", "none" or a positive count')
    network = v.get("network") or "host"
    if not isinstance(network, str) or not _NETWORK.match(network):
        raise UsageError("spec.container.network must be host, none or a network name")
    shm = v.get("shmSize")
    if shm is not None and (not isinstance(shm, str) or not _SHM.match(shm)):
        raise UsageError("spec.container.shmSize must be a size such as 2g or 512m")
    user = v.get("user")
    if user is not None and (not isinstance(user, str) or not _USER.match(user)):
        raise UsageError("spec.container.user must be a user name or uid, optionally with :group")
    host = v.get("host")
    if host is not None and (not isinstance(host, str) or not host or "\0" in host or "\n" in host):
        raise UsageError("spec.container.host must be a daemon address such as unix:///run/docker.sock")
    env = v.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and _ENV_NAME.match(k) and isinstance(x, str) for k, x in env.items()):
        raise UsageError("spec.container.env must map variable names to strings")
    mounts = []
    targets = set()
    for m in v.get("mounts") or []:
        if not isinstance(m, dict):
            raise UsageError("spec.container.mounts entries must be objects {source, target, readOnly}")
        source = _abs_path(m.get("source"), "mounts[].source")
        target = _abs_path(m.get("target"), "mounts[].target")
        if target == "/" or target == CONTAINER_ROOT or target.startswith(CONTAINER_ROOT + "/"):
            raise UsageError("spec.container.mounts[].target %s is / or under %s, which runctl uses" % (target, CONTAINER_ROOT))
        if target in targets:
            raise UsageError("spec.container.mounts: %s is mounted twice" % target)
        targets.add(target)
        mounts.append({"source": source, "target": target, "readOnly": bool(m.get("readOnly"))})
    return {
        "image": image, "runtime": runtime, "pull": pull, "gpus": gpus, "network": network, "shmSize": shm,
        "user": user, "host": host, "env": dict(env), "mounts": mounts,
    }


def container_name(run_id, token, step):
    """A name the runtime accepts, unique to this agent (token) and step: runctl-<run>-<token8>-<step>."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", run_id)[:80].strip(".-") or "run"
    return "runctl-%s-%s-%s" % (safe, token[:8], step)

"""`node JOB_DIR ATTEMPT ADDRS`: one node of a Slurm job runs its part of the run in the foreground.

The client writes JOB_DIR/job.json (a spec built for a placeholder run folder, specRunDir) on the
shared filesystem; the batch script starts this command on every node with `srun
--ntasks-per-node=1`. Each node makes its own run folder JOB_DIR/attempts/ATTEMPT/node<rank>, writes
the spec rebased onto it and supervises the trainer as this very process (a Slurm job step: no
daemon), so the job's exit status is the trainer's."""

import copy
import fcntl
import json
import os
import re

from .constants import EXIT_NOT_RUNNING, UsageError
from .daemon import STATE_FILES
from .fsutil import _unlink_quiet, atomic_write, make_private_dir, print_json, read_json_file
from .nodes import _addr
from .rundir import agent_alive
from .spec import normalize_spec
from .supervisor import Supervisor

_ATTEMPT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
JOB_KEYS = ("version", "spec", "specRunDir", "nodes", "commitsRank", "restartResume")
NODES_KEYS = ("count", "procsPerNode", "masterPort", "launcher")
STOP_MARKER = "stop"


def rebase_path(value, old, new):
    """`value` with the prefix `old` replaced by `new` when it is `old` or lies below it; anything
    else (a relative path, another folder, `old` as a mere string prefix) unchanged."""
    if not isinstance(value, str) or not os.path.isabs(value):
        return value
    if value == old:
        return new
    if value.startswith(old.rstrip("/") + "/"):
        return new.rstrip("/") + value[len(old.rstrip("/")):]
    return value


def rebase_spec(spec, old, new):
    """A copy of the spec with every path field at or below `old` moved below `new`: runDir, workdir,
    mirrorDir, outputDir, checkpoints.dir, dataDir, data[].to, setup.venvRoot. Paths elsewhere (a
    shared code mirror, a venv root, a user's own checkpoint folder) stay."""
    s = copy.deepcopy(spec)
    for key in ("runDir", "workdir", "mirrorDir", "outputDir", "dataDir"):
        if key in s:
            s[key] = rebase_path(s[key], old, new)
    if isinstance(s.get("checkpoints"), dict) and "dir" in s["checkpoints"]:
        s["checkpoints"]["dir"] = rebase_path(s["checkpoints"]["dir"], old, new)
    if isinstance(s.get("setup"), dict) and "venvRoot" in s["setup"]:
        s["setup"]["venvRoot"] = rebase_path(s["setup"]["venvRoot"], old, new)
    if isinstance(s.get("data"), list):
        for item in s["data"]:
            if isinstance(item, dict) and "to" in item:
                item["to"] = rebase_path(item["to"], old, new)
    return s


def _int_env(environ, name, required):
    raw = environ.get(name)
    if raw is None or raw == "":
        if required:
            raise UsageError("node runs inside a Slurm job step: %s is not set (start it with srun)" % name)
        return 0
    try:
        v = int(raw)
    except ValueError:
        v = -1
    if v < 0:
        raise UsageError("%s must be a non-negative integer, got %r" % (name, raw[:60]))
    return v


def check_job(job):
    """job.json's shape (no secrets ever: it lies on the shared filesystem)."""
    if not isinstance(job, dict):
        raise UsageError("job.json must be a JSON object")
    unknown = sorted(k for k in job if k not in JOB_KEYS)
    if unknown:
        raise UsageError("job.json: unknown field %s" % ", ".join(map(str, unknown)))
    if job.get("version") != 1:
        raise UsageError("job.json: version must be 1, got %r" % (job.get("version"),))
    spec = job.get("spec")
    if not isinstance(spec, dict):
        raise UsageError("job.json: spec must be an object")
    if "secrets" in spec:
        raise UsageError("job.json: spec.secrets is not allowed (the file lies on a shared filesystem)")
    if not isinstance(spec.get("runId"), str) or not spec["runId"]:
        raise UsageError("job.json: spec.runId must be set (every node and attempt commits under it)")
    srd = job.get("specRunDir")
    if not isinstance(srd, str) or not os.path.isabs(srd) or srd.rstrip("/") == "":
        raise UsageError("job.json: specRunDir must be an absolute path")
    nodes = job.get("nodes")
    if nodes is not None:
        if not isinstance(nodes, dict):
            raise UsageError("job.json: nodes must be null or {count, procsPerNode, masterPort, launcher}")
        unknown = sorted(k for k in nodes if k not in NODES_KEYS)
        if unknown:
            raise UsageError("job.json: nodes: unknown field %s" % ", ".join(map(str, unknown)))
        count = nodes.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise UsageError("job.json: nodes.count must be an integer >= 1, got %r" % (count,))
    cr = job.get("commitsRank", 0)
    if isinstance(cr, bool) or not isinstance(cr, int) or cr < 0:
        raise UsageError("job.json: commitsRank must be an integer >= 0, got %r" % (cr,))
    rr = job.get("restartResume")
    if rr is not None and (not isinstance(rr, dict) or not isinstance(rr.get("runId"), str)
                           or not isinstance(rr.get("storage"), dict)):
        raise UsageError("job.json: restartResume must be null or {storage, runId, name}")
    return job


def node_spec(job, job_dir, attempt, addrs_text, rank, restart):
    """(run folder, the spec for it) of this node, validated; raises UsageError. Pure: touches no file."""
    check_job(job)
    if not isinstance(attempt, str) or not _ATTEMPT.match(attempt) or len(attempt) > 128:
        raise UsageError("ATTEMPT must be a plain name ([A-Za-z0-9][A-Za-z0-9._-]*), got %r" % (attempt,))
    if not isinstance(addrs_text, str) or not addrs_text:
        raise UsageError("ADDRS must be a comma-separated list of host names, rank 0 first")
    addrs = addrs_text.split(",")
    for i, a in enumerate(addrs):
        try:
            _addr(a, "addrs[%d]" % i)
        except UsageError:
            raise UsageError("ADDRS: entry %d must be an IP address or a host name, got %r" % (i, a[:60]))
    nodes = job.get("nodes")
    if nodes is None:
        if len(addrs) != 1:
            raise UsageError("job.json has nodes null (one node), but ADDRS lists %d" % len(addrs))
        if rank != 0:
            raise UsageError("job.json has nodes null (one node), but SLURM_NODEID is %d" % rank)
    else:
        if len(addrs) != nodes["count"]:
            raise UsageError("ADDRS lists %d host(s), job.json's nodes.count is %d" % (len(addrs), nodes["count"]))
        if rank >= nodes["count"]:
            raise UsageError("SLURM_NODEID %d is not below nodes.count %d" % (rank, nodes["count"]))
    run_dir = os.path.join(os.path.abspath(job_dir), "attempts", attempt, "node%d" % rank)
    spec = rebase_spec(job["spec"], job["specRunDir"], run_dir)
    spec["runDir"] = run_dir
    if nodes is None:
        spec["nodes"] = None
    else:
        spec["nodes"] = {"rank": rank, "count": nodes["count"], "procsPerNode": nodes.get("procsPerNode", 1),
                         "masterAddr": addrs[0], "masterPort": nodes.get("masterPort", 29500), "addrs": addrs,
                         "launcher": nodes.get("launcher", "torchrun")}
    if rank != job.get("commitsRank", 0):
        # One node commits (the trainers save from global rank 0); the others keep theirs local.
        ck = dict(spec.get("checkpoints") or {})
        ck["storage"] = None
        spec["checkpoints"] = ck
    if restart > 0 and job.get("restartResume") is not None:
        # A requeued job: the run's own last commit, else what the first attempt resumed from.
        spec["resume"] = dict(job["restartResume"], ifAny=True, orElse=spec.get("resume"))
    normalize_spec(spec, run_dir)  # a bad spec fails here, before any folder is made
    return run_dir, spec


def cmd_node(job_dir, attempt, addrs_text, environ=None):
    """Runs this node's share of the Slurm job in the foreground; returns the trainer's exit code
    (RUN_DIR/exit_code: 128+N for signal N, 1 when it never ran), or 3 when another agent owns the folder."""
    environ = os.environ if environ is None else environ
    rank = _int_env(environ, "SLURM_NODEID", required=True)
    restart = _int_env(environ, "SLURM_RESTART_COUNT", required=False)
    job_path = os.path.join(job_dir, "job.json")
    if not os.path.isfile(job_path):
        raise UsageError("no job.json in %s" % job_dir)
    job = read_json_file(job_path)
    if job is None:
        raise UsageError("%s is not valid JSON" % job_path)
    run_dir, spec = node_spec(job, job_dir, attempt, addrs_text, rank, restart)
    attempt_dir = os.path.dirname(run_dir)
    make_private_dir(attempt_dir)
    make_private_dir(run_dir)
    # Held for this process's whole life (closed when it ends): a second `node` on the same folder
    # (the same attempt started twice) refuses instead of clearing a live run's records.
    lock_fd = os.open(os.path.join(run_dir, ".launch.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock_fd)
        lock_fd = None
    if lock_fd is None or agent_alive(run_dir):
        print_json({"error": "an agent is already running in %s" % run_dir})
        return EXIT_NOT_RUNNING
    for name in STATE_FILES:  # the same attempt started again: stale records would end a follower
        _unlink_quiet(os.path.join(run_dir, name))
    atomic_write(os.path.join(run_dir, "spec.json"), json.dumps(spec, indent=2).encode("utf-8"))
    rc = Supervisor(run_dir, stop_marker=os.path.join(attempt_dir, STOP_MARKER)).main()
    if rc != 0:
        return rc
    try:
        with open(os.path.join(run_dir, "exit_code")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1

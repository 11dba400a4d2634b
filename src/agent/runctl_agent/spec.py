"""Launch spec normalization and validation (normalize_spec and friends)."""

import os
import re
import signal

from .constants import IMDS_ENDPOINT, UsageError
from .container_spec import normalize_container
from .fsutil import safe_rel
from .nodes import normalize_nodes


def _num(v, default, name, allow_none=False):
    if v is None:
        if allow_none:
            return None
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise UsageError("spec.%s must be a non-negative number%s" % (name, " or null" if allow_none else ""))
    return int(v)


def normalize_spec(spec, run_dir):
    """Fill defaults and check types; raises UsageError with a readable message."""
    if not isinstance(spec, dict):
        raise UsageError("spec must be a JSON object")
    s = dict(spec)
    run_dir = os.path.abspath(run_dir)
    s["runId"] = s.get("runId") or os.path.basename(run_dir)
    s["runDir"] = run_dir
    if not isinstance(s["runId"], str) or safe_rel(s["runId"]) != s["runId"] or "/" in s["runId"]:
        raise UsageError("spec.runId must be a plain name")
    workdir = s.get("workdir") or os.path.join(run_dir, "code")
    if not isinstance(workdir, str):
        raise UsageError("spec.workdir must be a path")
    s["workdir"] = os.path.join(run_dir, workdir) if not os.path.isabs(workdir) else workdir
    wd = s["workdir"]

    def path_in(v, name):
        if v is None:
            return None
        if not isinstance(v, str) or not v:
            raise UsageError("spec.%s must be a path" % name)
        return v if os.path.isabs(v) else os.path.join(wd, v)

    argv = s.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise UsageError("spec.argv must be a non-empty list of strings (script first)")
    if argv[0].startswith("-"):
        # The interpreter would read "-V.py" as its own option: name the script as a path.
        argv = ["./" + argv[0]] + argv[1:]
    s["argv"] = argv
    s["python"] = s.get("python") or "python3"
    env = s.get("env") or {}
    if not isinstance(env, dict):
        raise UsageError("spec.env must be an object")
    s["env"] = env
    s["hyperparams"] = s.get("hyperparams") if s.get("hyperparams") is not None else {}
    s["mirrorDir"] = path_in(s.get("mirrorDir"), "mirrorDir")
    setup = s.get("setup")
    if setup is not None:
        if not isinstance(setup, dict):
            raise UsageError("spec.setup must be an object or null")
        setup = dict(setup)
        pip = dict(setup.get("pip") or {})
        pip["findLinks"] = list(pip.get("findLinks") or [])
        pip["noIndex"] = bool(pip.get("noIndex"))
        pip["indexUrl"] = pip.get("indexUrl") or None
        pip["extraArgs"] = [str(a) for a in (pip.get("extraArgs") or [])]
        setup["pip"] = pip
        setup["systemSitePackages"] = bool(setup.get("systemSitePackages"))
        cmds = setup.get("commands") or []
        if not isinstance(cmds, list) or not all(isinstance(c, str) for c in cmds):
            raise UsageError("spec.setup.commands must be a list of strings")
        setup["commands"] = cmds
        setup["venvRoot"] = setup.get("venvRoot") or os.path.join(os.path.dirname(os.path.dirname(run_dir)), "venvs")
        if not os.path.isabs(setup["venvRoot"]):
            raise UsageError("spec.setup.venvRoot must be absolute")
    s["setup"] = setup
    data = s.get("data") or []
    if not isinstance(data, list):
        raise UsageError("spec.data must be a list")
    norm = []
    for d in data:
        if not isinstance(d, dict) or not isinstance(d.get("source"), dict) or not isinstance(d.get("to"), str):
            raise UsageError("spec.data entries need source and to")
        norm.append({"source": d["source"], "to": path_in(d["to"], "data[].to")})
    s["data"] = norm
    s["dataDir"] = path_in(s.get("dataDir"), "dataDir")
    s["outputDir"] = path_in(s.get("outputDir"), "outputDir") or os.path.join(run_dir, "outputs")
    ck = dict(s.get("checkpoints") or {})
    ck["dir"] = path_in(ck.get("dir"), "checkpoints.dir") or os.path.join(run_dir, "checkpoints")
    ck["storage"] = ck.get("storage")
    ck["keep"] = _num(ck.get("keep"), None, "checkpoints.keep", allow_none=True)
    ck["settleMs"] = _num(ck.get("settleMs"), 2000, "checkpoints.settleMs")
    ck["pollMs"] = _num(ck.get("pollMs"), 500, "checkpoints.pollMs")
    s["checkpoints"] = ck
    s["resume"] = normalize_resume(s.get("resume"))
    lim = dict(s.get("limits") or {})
    lim["maxDurationMs"] = _num(lim.get("maxDurationMs"), None, "limits.maxDurationMs", allow_none=True)
    lim["graceMs"] = _num(lim.get("graceMs"), 30000, "limits.graceMs")
    budget = lim.get("budget")
    if budget is not None:
        if not isinstance(budget, dict):
            raise UsageError("spec.limits.budget must be null or {maxUsd, hourlyUsd, spentUsd}")
        money = {}
        for key in ("maxUsd", "hourlyUsd", "spentUsd"):
            v = budget.get(key, 0)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise UsageError("spec.limits.budget.%s must be a non-negative number" % key)
            money[key] = float(v)
        budget = money
    lim["budget"] = budget
    s["limits"] = lim
    shutdown = s.get("shutdown")
    if shutdown is not None:
        cmd = shutdown.get("command") if isinstance(shutdown, dict) else None
        if not isinstance(cmd, list) or not cmd or not all(isinstance(c, str) for c in cmd):
            raise UsageError("spec.shutdown must be null or {command: [argv], afterRunMs}")
        cancel = shutdown.get("cancelBootPowerOff")
        if cancel is not None and (not isinstance(cancel, list) or not cancel or not all(isinstance(c, str) for c in cancel)):
            raise UsageError("spec.shutdown.cancelBootPowerOff must be absent or [argv]")
        shutdown = {"command": cmd, "afterRunMs": _num(shutdown.get("afterRunMs"), 0, "shutdown.afterRunMs"), "cancelBootPowerOff": cancel}
    s["shutdown"] = shutdown
    outputs = s.get("outputs")
    if outputs is not None and (not isinstance(outputs, dict) or not isinstance(outputs.get("storage"), dict)):
        raise UsageError("spec.outputs must be null or {\"storage\": descriptor}")
    s["outputs"] = outputs
    s["interruption"] = normalize_interruption(s.get("interruption"))
    s["container"] = normalize_container(s.get("container"))
    s["nodes"] = normalize_nodes(s.get("nodes"))
    if s["nodes"] is not None and s["nodes"]["count"] > 1 and s["container"] is not None \
            and s["container"]["network"] != "host":
        # The ranks reach each other on the machines' own addresses (the master port, gloo/NCCL's ports).
        raise UsageError("spec.container.network must be \"host\" for a run on several nodes, got %s"
                         % s["container"]["network"])
    return s


def normalize_resume(v, name="resume"):
    """spec.resume: null or {storage, runId, name?, ifAny?, orElse?}. `ifAny` true: a run with no
    committed checkpoint at all restores `orElse` (a resume object without an orElse of its own)
    instead, or starts from the beginning, rather than failing CHECKPOINT_NOT_FOUND."""
    if v is None:
        return None
    if not isinstance(v, dict) or not isinstance(v.get("runId"), str):
        raise UsageError("spec.%s needs storage and runId" % name)
    out = dict(v)
    if_any = out.get("ifAny", False)
    if not isinstance(if_any, bool):
        raise UsageError("spec.%s.ifAny must be true or false" % name)
    out["ifAny"] = if_any
    or_else = out.get("orElse")
    if or_else is not None:
        if not if_any:
            raise UsageError("spec.%s.orElse needs ifAny: true" % name)
        if name != "resume":
            raise UsageError("spec.%s.orElse must be null: one fallback only" % name)
        or_else = normalize_resume(or_else, name + ".orElse")
    out["orElse"] = or_else
    return out


def normalize_interruption(v):
    """spec.interruption: null (polling off) or the settings of the spot-notice poller, defaults filled."""
    if v is None:
        return None
    if not isinstance(v, dict):
        raise UsageError("spec.interruption must be an object or null")
    out = dict(v)
    endpoint = v.get("imdsEndpoint") or IMDS_ENDPOINT
    if not isinstance(endpoint, str) or not re.match(r"^https?://[^/\s]+/*$", endpoint):
        raise UsageError("spec.interruption.imdsEndpoint must be an http:// URL without a path")
    out["imdsEndpoint"] = endpoint.rstrip("/")
    out["pollMs"] = _num(v.get("pollMs"), 500, "interruption.pollMs")  # a local endpoint: cheap to ask often
    out["noticeWindowMs"] = _num(v.get("noticeWindowMs"), 120000, "interruption.noticeWindowMs")
    out["reserveMs"] = _num(v.get("reserveMs"), 20000, "interruption.reserveMs")
    sig = v.get("signal") or "SIGTERM"
    if not isinstance(sig, str):
        raise UsageError("spec.interruption.signal must be a signal name such as SIGTERM")
    sig = sig.upper()
    if not sig.startswith("SIG"):
        sig = "SIG" + sig
    if sig.startswith("SIG_") or not isinstance(getattr(signal, sig, None), signal.Signals):
        raise UsageError("spec.interruption.signal: unknown signal %s" % v.get("signal"))
    out["signal"] = sig
    return out


def check_launch_secrets(obj):
    """The `secrets` of a launch spec: null or {"aws": {accessKeyId, secretAccessKey, sessionToken?}}.
    Error messages never quote the values."""
    if obj is None:
        return None
    if not isinstance(obj, dict) or set(obj) - {"aws"}:
        raise UsageError("spec.secrets must be an object with only an `aws` entry")
    aws = obj.get("aws")
    if aws is None:
        return {}
    if not isinstance(aws, dict) or not isinstance(aws.get("accessKeyId"), str) or not aws.get("accessKeyId") \
            or not isinstance(aws.get("secretAccessKey"), str) or not aws.get("secretAccessKey") \
            or not isinstance(aws.get("sessionToken"), (str, type(None))):
        raise UsageError("spec.secrets.aws needs accessKeyId and secretAccessKey strings (and an optional sessionToken)")
    return {"aws": {"accessKeyId": aws["accessKeyId"], "secretAccessKey": aws["secretAccessKey"],
                    "sessionToken": aws.get("sessionToken") or None}}

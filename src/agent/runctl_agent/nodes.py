"""spec.nodes: one node of a multi-node run: validation, the environment it adds, the trainer's argv."""

import re
import socket
import struct

from .constants import UsageError

try:
    import fcntl
except ImportError:  # not Linux/Unix: no interface lookup
    fcntl = None

LAUNCHERS = ("torchrun", "none")
DEFAULT_MASTER_PORT = 29500
# A host name, an IPv4 address or an IPv6 address (no brackets): one token that never reads as an option.
_ADDR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:%-]*$")
_KEYS = ("rank", "count", "procsPerNode", "masterAddr", "masterPort", "addrs", "launcher")
# Debian's torch 1.13 on Python 3.11 parses torchrun's default `--redirects 0` / `--tee 0` into None
# and every torchrun dies in to_map (`'NoneType' object has no attribute 'get'`). A mapping for local
# rank 9 leaves ranks 0-8 at "no redirect" on every torch version; fine while procsPerNode <= 9.
TORCHRUN_STD_WORKAROUND = "9:0"


def _int(v, name, low, high=None):
    if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
        bound = "%d..%d" % (low, high) if high is not None else ">= %d" % low
        raise UsageError("spec.nodes.%s must be an integer %s, got %s" % (name, bound, _show(v)))
    return v


def _show(v):
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _addr(v, name):
    if not isinstance(v, str) or not _ADDR.match(v) or len(v) > 253:
        raise UsageError("spec.nodes.%s must be an IP address or a host name, got %s" % (name, _show(v)))
    return v


def normalize_nodes(v):
    """spec.nodes: null (one node, as always) or this node's place in a multi-node run, defaults filled
    (procsPerNode 1, masterAddr addrs[0], masterPort 29500, launcher torchrun)."""
    if v is None:
        return None
    if not isinstance(v, dict):
        raise UsageError("spec.nodes must be an object or null")
    unknown = sorted(k for k in v if k not in _KEYS)
    if unknown:
        raise UsageError("spec.nodes: unknown field %s (known: %s)" % (", ".join(map(str, unknown)), ", ".join(_KEYS)))
    count = _int(v.get("count"), "count", 1)
    rank = v.get("rank")
    if isinstance(rank, int) and not isinstance(rank, bool) and rank >= count:
        raise UsageError("spec.nodes.rank must be below spec.nodes.count (%d), got %d" % (count, rank))
    rank = _int(rank, "rank", 0)
    procs = _int(v.get("procsPerNode", 1), "procsPerNode", 1)
    addrs = v.get("addrs")
    if not isinstance(addrs, list) or len(addrs) != count:
        raise UsageError("spec.nodes.addrs must list one address per node (%d), rank 0 first, got %s" % (count, _show(addrs)))
    addrs = [_addr(a, "addrs[%d]" % i) for i, a in enumerate(addrs)]
    master = v.get("masterAddr")
    master = addrs[0] if master is None else _addr(master, "masterAddr")
    port = _int(v.get("masterPort", DEFAULT_MASTER_PORT), "masterPort", 1, 65535)
    launcher = v.get("launcher", "torchrun")
    if launcher not in LAUNCHERS:
        raise UsageError("spec.nodes.launcher must be one of %s, got %s" % (", ".join(LAUNCHERS), _show(launcher)))
    return {"rank": rank, "count": count, "procsPerNode": procs, "masterAddr": master, "masterPort": port,
            "addrs": addrs, "launcher": launcher}


def node_env(nodes, user_env):
    """The variables that tell setup steps and the trainer where this node stands. One node: rank 0
    of 1, nothing else. Several: the RUNCTL_* names plus torchrun's own PET_* (what its flags default
    to), so a trainer started any way (launcher none, a setup step running torchrun) sees the same."""
    if nodes is None:
        return {"RUNCTL_NODE_RANK": "0", "RUNCTL_NUM_NODES": "1"}
    env = {
        "RUNCTL_NODE_RANK": str(nodes["rank"]),
        "RUNCTL_NUM_NODES": str(nodes["count"]),
        "RUNCTL_MASTER_ADDR": nodes["masterAddr"],
        "RUNCTL_MASTER_PORT": str(nodes["masterPort"]),
        "RUNCTL_NODE_ADDRS": ",".join(nodes["addrs"]),
        "PET_NNODES": str(nodes["count"]),
        "PET_NODE_RANK": str(nodes["rank"]),
        "PET_MASTER_ADDR": nodes["masterAddr"],
        "PET_MASTER_PORT": str(nodes["masterPort"]),
        "PET_NPROC_PER_NODE": str(nodes["procsPerNode"]),
    }
    for name in ("PET_REDIRECTS", "PET_TEE"):
        if name not in user_env:  # the user's value (or null: unset) wins
            env[name] = TORCHRUN_STD_WORKAROUND
    if "GLOO_SOCKET_IFNAME" not in user_env:
        # gloo binds to the address its own host name resolves to; where that is loopback (Debian's
        # 127.0.1.1 line) or nothing, peers cannot connect. The interface holding this node's
        # address is the right one; none found (an address NATed to this machine): torch decides.
        iface = interface_of(nodes["addrs"][nodes["rank"]])
        if iface:
            env["GLOO_SOCKET_IFNAME"] = iface
    return env


_SIOCGIFADDR = 0x8915
_resolved = {}


def interface_of(addr):
    """The name of the network interface whose (primary) IPv4 address is addr, or addr's address
    when it is a host name; None when no interface has it or it cannot be told."""
    if fcntl is None or not hasattr(socket, "if_nameindex"):
        return None
    ip = _resolved.get(addr)
    if ip is None:
        try:
            socket.inet_aton(addr)
            ip = addr if addr.count(".") == 3 else None
        except OSError:
            ip = None
        if ip is None:
            try:
                ip = socket.getaddrinfo(addr, None, socket.AF_INET)[0][4][0]
            except (OSError, IndexError, UnicodeError):
                ip = ""
        _resolved[addr] = ip
    if not ip:
        return None
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _index, name in socket.if_nameindex():
            try:
                got = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # no IPv4 address on it
            if socket.inet_ntoa(got[20:24]) == ip:
                return name
    except OSError:
        return None
    finally:
        s.close()
    return None


def trainer_argv(interp, argv, nodes):
    """What the agent starts as the trainer: the script under the interpreter, or under torchrun
    (underscore flags: torch 1.13 knows no others, newer torch accepts both)."""
    if nodes is None or nodes["launcher"] != "torchrun":
        return [interp, "-u"] + list(argv)
    return [interp, "-u", "-m", "torch.distributed.run",
            "--nnodes", str(nodes["count"]), "--nproc_per_node", str(nodes["procsPerNode"]),
            "--node_rank", str(nodes["rank"]), "--master_addr", nodes["masterAddr"],
            "--master_port", str(nodes["masterPort"]), "--monitor_interval", "1"] + list(argv)

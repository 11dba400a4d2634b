"""Argument parsing and the command dispatcher (main) plus the process entry point."""

import sys
import traceback

from .children import cmd_reap, cmd_watch
from .constants import EXIT_ERROR, EXIT_USAGE, USAGE, UsageError
from .daemon import cmd_launch, cmd_signal, cmd_status, cmd_supervise
from .follow import cmd_follow
from .fsutil import print_json
from .manifest import cmd_manifest
from .slurm_node import cmd_node
from .sync_apply import cmd_sync_apply, cmd_sync_apply_staged


def parse_follow(args):
    if not args:
        raise UsageError("follow needs RUN_DIR")
    run_dir = args[0]
    # Byte offsets (0 and up), and the bounded mode's limits (1 and up; absent: unbounded).
    opts = {"--log-offset": 0, "--events-offset": 0, "--max-wait-ms": None, "--max-bytes": None}
    liveness = "lock"
    what = {"--log-offset": "a byte offset", "--events-offset": "a byte offset", "--max-wait-ms": "a positive number of milliseconds", "--max-bytes": "a positive number of bytes"}
    i = 1
    while i < len(args):
        flag = args[i]
        val = None
        if "=" in flag:
            flag, val = flag.split("=", 1)
        elif i + 1 < len(args):
            val = args[i + 1]
            i += 1
        if flag == "--liveness" and val in ("lock", "heartbeat"):
            liveness = val
            i += 1
            continue
        if flag not in opts or val is None:
            raise UsageError("unknown or incomplete option %s" % args[i])
        try:
            opts[flag] = int(val)
        except ValueError:
            raise UsageError("%s needs %s" % (flag, what[flag]))
        if opts[flag] < (0 if flag in ("--log-offset", "--events-offset") else 1):
            raise UsageError("%s needs %s" % (flag, what[flag]))
        i += 1
    return run_dir, opts["--log-offset"], opts["--events-offset"], opts["--max-wait-ms"], opts["--max-bytes"], liveness


def main(argv):
    if not argv:
        raise UsageError("no command")
    cmd, args = argv[0], argv[1:]

    def one(n):
        if len(args) != n:
            raise UsageError("%s takes %d argument(s)" % (cmd, n))
        return args

    if cmd == "launch":
        return cmd_launch(one(1)[0])
    if cmd == "supervise":
        if len(args) == 2 and args[1] == "--secrets-stdin":
            return cmd_supervise(args[0], secrets_on_stdin=True)
        return cmd_supervise(one(1)[0])
    if cmd == "follow":
        return cmd_follow(*parse_follow(args))
    if cmd == "signal":
        a = one(2)
        return cmd_signal(a[0], a[1])
    if cmd == "status":
        return cmd_status(one(1)[0])
    if cmd == "reap":
        return cmd_reap(one(1)[0])
    if cmd == "watch":
        return cmd_watch(one(1)[0])
    if cmd == "node":
        a = one(3)
        return cmd_node(a[0], a[1], a[2])
    if cmd == "manifest":
        return cmd_manifest(one(1)[0])
    if cmd == "sync-apply":
        if len(args) == 2 and args[1] == "--staged":
            return cmd_sync_apply_staged(args[0])
        return cmd_sync_apply(one(1)[0])
    raise UsageError("unknown command %r" % cmd)


def entry():
    """The process entry point (`python3 runctl-agent.pyz <command> ...`): runs main and exits with
    its code; a usage error prints the usage, any other exception its traceback on stderr."""
    try:
        code = main(sys.argv[1:])
    except UsageError as e:
        print_json({"error": str(e), "usage": USAGE})
        code = EXIT_USAGE
    except Exception as e:
        sys.stderr.write(traceback.format_exc())
        try:
            print_json({"error": "%s: %s" % (type(e).__name__, e)})
        except Exception:
            pass
        code = EXIT_ERROR
    sys.exit(code)

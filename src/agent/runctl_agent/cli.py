"""Argument parsing and the command dispatcher (main) plus the process entry point."""

import os
import sys

from .constants import EXIT_ERROR, EXIT_USAGE, USAGE, UsageError
from .fsutil import print_json

# Each command imports its own modules: importing them all costs more than a sync no-op's whole
# work (~90 ms when the agent ran as a zipapp, compiled at every start; decision 0029).

# Commands that end without the interpreter's teardown (freeing every object the scan made, ~3 ms
# of a 2,000-file sync): they run no threads and leave nothing to flush but stdout and stderr.
_FAST_EXIT = ("sync", "manifest")


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
        from .daemon import cmd_launch

        return cmd_launch(one(1)[0])
    if cmd == "supervise":
        from .daemon import cmd_supervise

        if len(args) == 2 and args[1] == "--secrets-stdin":
            return cmd_supervise(args[0], secrets_on_stdin=True)
        return cmd_supervise(one(1)[0])
    if cmd == "follow":
        from .follow import cmd_follow

        return cmd_follow(*parse_follow(args))
    if cmd == "signal":
        from .daemon import cmd_signal

        a = one(2)
        return cmd_signal(a[0], a[1])
    if cmd == "status":
        from .daemon import cmd_status

        return cmd_status(one(1)[0])
    if cmd == "reap":
        from .children import cmd_reap

        return cmd_reap(one(1)[0])
    if cmd == "watch":
        from .children import cmd_watch

        return cmd_watch(one(1)[0])
    if cmd == "node":
        from .slurm_node import cmd_node

        a = one(3)
        return cmd_node(a[0], a[1], a[2])
    if cmd == "manifest":
        from .manifest import cmd_manifest

        return cmd_manifest(one(1)[0])
    if cmd == "sync":
        from .sync_apply import cmd_sync

        return cmd_sync(one(1)[0])
    if cmd == "sync-apply":
        from .sync_apply import cmd_sync_apply, cmd_sync_apply_staged

        if len(args) == 2 and args[1] == "--staged":
            return cmd_sync_apply_staged(args[0])
        return cmd_sync_apply(one(1)[0])
    raise UsageError("unknown command %r" % cmd)


def entry():
    """The process entry point (`python3 <agent>/__main__.py <command> ...`): runs main and exits with
    its code; a usage error prints the usage, any other exception its traceback on stderr."""
    try:
        code = main(sys.argv[1:])
    except UsageError as e:
        print_json({"error": str(e), "usage": USAGE})
        code = EXIT_USAGE
    except Exception as e:
        import traceback

        sys.stderr.write(traceback.format_exc())
        try:
            print_json({"error": "%s: %s" % (type(e).__name__, e)})
        except Exception:
            pass
        code = EXIT_ERROR
    if sys.argv[1:2] and sys.argv[1] in _FAST_EXIT:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)

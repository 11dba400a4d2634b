import type { CommandName } from "./cli-args.js";

const EXIT_CODES_TEXT = `Exit codes:
  0    ok (logs -f, attach: the run succeeded; cancel: the run ended canceled)
  1    the run failed, was canceled or interrupted; or the operation failed
  2    usage error (unknown command or flag, missing or bad argument)
  3    not found (no such run in $RUNCTL_HOME/runs)
  130  interrupted by Ctrl-C (a followed run goes on; reattach with runctl attach RUN;
       quickstart cancels its own run)`;

const PROVIDERS_TEXT = `Runs on other machines: local runs need nothing. For ssh-hosts runs the CLI rebuilds the host from
the run's journal (host, port, user, key path, known_hosts path: never secrets); for slurm runs, the
login node and runctl's folder on the cluster the same way. Runs on other
providers (ec2) cannot be rebuilt from the journal alone; follow them from code with
Runctl.attach(runId, { provider }).`;

const GLOBAL = `runctl: run ML training jobs on this machine, your SSH hosts or EC2.

Usage: runctl <command> [flags]

Commands:
  quickstart               train the bundled template trainer on this machine, verify its checkpoint
  ls                       runs in $RUNCTL_HOME (status, duration, restarts, cost) and cloud resources
  logs RUN [-f]            the run's log lines; -f follows until the run ends
  attach RUN               replay every event of the run, then follow it to the end
  checkpoints RUN          the run's committed checkpoints (--verify re-checks every sha256)
  cancel RUN               stop a running run from another process (--strategy interrupt|kill)
  sweep [--dry-run]        delete cloud resources runctl made that are no longer needed
  plan FILE                the dry run of a plan module (exports plan and script)
  doctor [FILE|--host H]   check a target before the first run (SSH, Python, disk, GPU, S3, AWS IAM)

Every command takes --json (stdout: one JSON document, or JSON lines for quickstart, logs -f and
attach; every document and line has "schemaVersion":1) and --help. Data goes to stdout; messages
and errors go to stderr as "runctl: <message> (<code>)", or to stdout as
{"schemaVersion":1,"error":{"code","message"}} with --json.

Global flags:
  -h, --help               this help; runctl <command> --help for a command
  -V, --version            the version (with --json: {"version":"..."})

Environment:
  RUNCTL_HOME              runctl's local folder (journals, resource ledger); default ~/.runctl

${EXIT_CODES_TEXT}
`;

const COMMANDS: Record<CommandName, string> = {
  quickstart: `Usage: runctl quickstart [--dir DIR] [--steps N] [--json]

Trains runctl's template trainer (training/train.py in the package: pure Python 3.8+, no
dependencies) on this machine, no account needed: syncs it to a run folder in $RUNCTL_HOME, trains
it, commits a checkpoint every 20 steps to a local folder (the newest 3 kept), prints progress,
then verifies the latest checkpoint byte for byte (sha256). Needs python3 on PATH (checked first).
Exit 0 when the run succeeded and its checkpoint verifies, 1 otherwise. Ctrl-C cancels the run
(the trainer saves a last checkpoint) and exits 130; a second Ctrl-C leaves at once.

Flags:
  --dir DIR      the checkpoint folder (default: .runctl/checkpoints in the working directory)
  --steps N      training steps (default 60)
  --json         one JSON line per event ({"schemaVersion":1,"type",...}), first {"type":"run"},
                 last {"type":"result","runId","status","latest","verified"}
`,
  ls: `Usage: runctl ls [--json]

Lists the runs recorded in $RUNCTL_HOME/runs, newest first: run id, provider, script, created,
status, duration, restarts and cost, then the cloud resources in runctl's ledger that are not
deleted yet (kind, id, region, run, age, expires).

Status comes from the run's journal: succeeded, failed, canceled or interrupted once it ended;
running while a client follows it; unknown when no client follows it and it has not ended (the
client died: runctl attach RUN finds out). Cost is "-" when the run reported none.

Flags:
  --json    {"schemaVersion":1,"runs":[...],"resources":[...]}
`,
  logs: `Usage: runctl logs RUN [-f] [--json]

Prints the run's output lines (setup and trainer, stdout and stderr) from its local journal.

Flags:
  -f, --follow   print every line so far, then follow the run live until it ends; the exit
                 code is then the run's (0 succeeded, 1 otherwise). Ctrl-C stops following
                 (exit 130); the run goes on.
  --json         without -f: {"schemaVersion":1,"runId","status","lines":[...]};
                 with -f: one log event per line (JSON lines)

${PROVIDERS_TEXT}
`,
  attach: `Usage: runctl attach RUN [--json]

Replays every recorded event of the run, then follows it live to its end (taking over from a
client that died, with no lost or repeated line). Prints phases, log lines, metrics, checkpoints,
warnings and the exit; raw RUNCTL_METRIC lines are shown as their metric event. The exit code is
the run's: 0 succeeded, 1 otherwise; Ctrl-C stops following (exit 130) and the run goes on.

Flags:
  --json    every event as one JSON object per line (JSON lines), the exit event last

${PROVIDERS_TEXT}
`,
  checkpoints: `Usage: runctl checkpoints RUN [--verify] [--json]

Lists the run's committed checkpoints (those whose manifest exists), oldest first: name, step,
files, bytes, committed at. The storage comes from the run's journal: a local folder or S3 (with
the default AWS credential chain), or the machine itself for runs without storage.

Flags:
  --verify  re-read every file and check its size and sha256; exit 1 if any checkpoint is corrupt
  --json    {"schemaVersion":1,"runId","storage","checkpoints":[...]}

${PROVIDERS_TEXT}
`,
  cancel: `Usage: runctl cancel RUN [--strategy interrupt|kill] [--json]

Stops a running run from another process and waits for it to end, then reports its final status.
Exit 0 when it ended canceled (or had already ended), 1 when it ended otherwise (it finished or
failed before the signal took effect). A run still being provisioned or synced is cancelled once it
has started on its machine. Ctrl-C stops waiting (exit 130); the cancel request stands.

Flags:
  --strategy S   interrupt (default): SIGTERM, the trainer saves, the final checkpoint is
                 committed, SIGKILL after the grace time; kill: SIGKILL at once.
                 The SDK's third strategy, detach, is refused here: this process does not follow
                 the run, so there is nothing to detach (Ctrl-C on logs -f or attach detaches).
  --json         {"schemaVersion":1,"runId","strategy","status","exitCode","signal",...}

${PROVIDERS_TEXT}
`,
  sweep: `Usage: runctl sweep [--dry-run] [--force] [--region R] [--owner all] [--json]

Finds cloud resources runctl created (by their full set of runctl tags) that are no longer needed
(expired, or their run has ended) and deletes them. Persistent resources are kept. A live run
(an instance of it still running, the run not known to be over) is never swept, even expired,
unless --force. Without --region it also cancels runctl's own Slurm jobs (comment runctl:<run>)
whose run is over, on every login node in the local ledger; never a job runctl did not submit.

Flags:
  --dry-run     report what would be deleted; delete nothing
  --force       also sweep expired resources of runs that look alive
  --region R    the region to sweep (default: every region in the local ledger, and AWS_REGION)
  --owner O     whose resources: all for everyone's (default: only yours)
  --json        {"schemaVersion":1,"dryRun","found","deleted","kept","errors"}

Exit 1 when any deletion failed.
`,
  plan: `Usage: runctl plan FILE [--json]

Shows the dry run of a plan: steps, resources that would be created (with tags), the sync summary,
checkpoint storage and the cost estimate. Nothing is created.

FILE is a module exporting plan (a RunPlan, e.g. Runctl.instance(local()).sync("./")) and script
(the training script, a string). .js, .mjs and .cjs files are imported as they are; .ts, .mts and
.cts files through Node's type stripping (Node >= 22.18; older 22.x: NODE_OPTIONS=
--experimental-strip-types), or tsx when the project has it (also for syntax stripping cannot
handle: enum, namespace, parameter properties). Exit 2 when FILE is missing, not a module, or
lacks the exports.

Flags:
  --json    {"schemaVersion":1,"file","script","plan":{provider,steps,resources,sync,checkpoints,estimate}}
`,
  doctor: `Usage: runctl doctor [FILE | --host user@host[:port] [--identity KEY]] [--json]

Checks a target before its first run and prints what to fix, one line per check
(ok, ! warning, x failure). Nothing is created, leased or trusted.

  (no argument)   this machine: Python >= 3.8, torch, free disk in $RUNCTL_HOME, GPUs (nvidia-smi)
  --host H        an SSH host: connects (host key verified against ~/.ssh/known_hosts; an unknown
                  key is reported with the ssh-keyscan line to run, never trusted), then the same
  FILE            a plan module (like runctl plan FILE): its provider (EC2: credentials and the IAM
                  actions a run needs, by DryRun) and its storages (a small list; boto3 or aws CLI)

Flags:
  --host H        user@host[:port] of an SSH host
  --identity KEY  the private key for --host (default: ssh-agent, then ~/.ssh/id_ed25519, id_ecdsa, id_rsa)
  --json          {"schemaVersion":1,"ok","checks":[{id,title,status,detail,fix?,code?}]}

Exit 1 when a check failed (warnings do not count).
`,
};

/**
 * The help text: the overview, or one command's.
 *
 * @param command - A command, or undefined for the overview. @defaultValue undefined
 * @example
 * ```ts
 * process.stdout.write(helpText("logs"));
 * ```
 */
export function helpText(command?: CommandName): string {
  return command === undefined ? GLOBAL : `${COMMANDS[command]}\n${EXIT_CODES_TEXT}\n`;
}

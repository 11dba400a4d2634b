"""Exit codes, tunables, the usage text and the error classes shared by every command."""


EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3  # also "already running"
EXIT_NO_RUN = 4
EXIT_LOST = 5
EXIT_VERIFY = 6
EXIT_UNSAFE = 7

TAIL_BYTES = 4096
CHUNK = 1 << 20
FOLLOW_POLL_S = 0.1
FOLLOW_HB_S = 2.0
SYNC_SMALL_FILE = 1 << 20  # synced files up to this size are read whole before they are written
FOLLOW_MAX_LINE = 1 << 20  # a longer unterminated line is sent in pieces, so memory stays bounded
COMMIT_TRIES = 3
IMDS_ENDPOINT = "http://169.254.169.254"
IMDS_TOKEN_TTL_S = 21600
IMDS_TIMEOUT_S = 1.0

USAGE = (
    "usage: runctl_agent.py launch RUN_DIR < spec.json"
    " | follow RUN_DIR [--log-offset N] [--events-offset M] [--max-wait-ms N] [--max-bytes N] [--liveness lock|heartbeat]"
    " | signal RUN_DIR interrupt|kill | status RUN_DIR | reap RUN_DIR | manifest DIR | sync DIR <> tar | sync-apply DIR < tar"
    " | sync-apply DIR --staged < {storage, key, secrets}"
    " | node JOB_DIR ATTEMPT ADDRS (in a Slurm job step: SLURM_NODEID, SLURM_RESTART_COUNT)"
)


class UsageError(Exception):
    pass


class PhaseFailed(Exception):
    def __init__(self, code, message, reason, output_tail=None):
        Exception.__init__(self, message)
        self.code = code
        self.message = message
        self.reason = reason
        self.output_tail = output_tail


class Aborted(Exception):
    pass

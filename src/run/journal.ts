import { appendFileSync, existsSync, mkdirSync, openSync, closeSync, readFileSync, renameSync, truncateSync, writeFileSync, statSync, readSync } from "node:fs";
import { join } from "node:path";
import { RunctlError } from "../errors/runctl-error.js";
import type { MachineRecord } from "../providers/types.js";
import type { StorageDescriptor } from "../storage/types.js";
import { journalDir, runctlHome } from "../util/runctl-home.js";
import { tryLockJournal, unlockJournal } from "./journal-lock.js";
import type { RunEvent, RunEventInput } from "./events.js";

/** Byte offsets into the machine's `train.log` and `events.jsonl`: where following resumes. */
export interface FollowCursor {
  readonly log: number;
  readonly events: number;
}

/** What a client records about a run in `$RUNCTL_HOME/runs/<runId>/run.json`. */
export interface RunRecord {
  readonly version: 1;
  readonly runId: string;
  readonly createdAt: string;
  readonly provider: string;
  readonly script: string;
  /** Set once a machine was provisioned. */
  readonly machine?: MachineRecord | undefined;
  /** The run folder on the machine, once launched. */
  readonly runDir?: string | undefined;
  readonly agentPath?: string | undefined;
  readonly agentPython?: string | undefined;
  /** A multi-node run's machines, by rank (`machine` is node 0's; `Runctl.attach` follows node 0). */
  readonly nodes?: readonly MachineRecord[] | undefined;
  /** Where checkpoints are committed. */
  readonly storage?: { readonly uri: string; readonly descriptor: StorageDescriptor } | undefined;
}

interface JournalLine {
  readonly e: RunEvent;
  readonly c?: FollowCursor | undefined;
}

export { journalDir };

/**
 * The client's durable record of a run: `run.json` plus `journal.jsonl` (every event, with the
 * follow cursor). One writer at a time, held by an OS lock the kernel frees when the writer dies
 * (journal-lock.ts) and by one follower per process; `writer.pid` only tells people which process
 * it is. `Runctl.attach` replays the journal and takes over following when the writer is gone.
 */
export class RunJournal {
  private seq: number;
  private cursorValue: FollowCursor;
  /** Whether this instance holds the writer role (and so may release it). */
  private writer = false;

  private constructor(
    readonly runId: string,
    private recordValue: RunRecord,
    readonly events: readonly RunEvent[],
    cursor: FollowCursor,
    /** Bytes of journal.jsonl that `events` came from (where reading another writer's lines resumes). */
    readonly bytesRead = 0,
  ) {
    this.seq = events.length === 0 ? 0 : events[events.length - 1]!.seq;
    this.cursorValue = cursor;
  }

  /**
   * Starts a new journal for a new run and takes the writer role: at once in this process; the OS
   * lock is taken in the background (the run id is new, so nobody else can hold it).
   */
  static create(record: RunRecord): RunJournal {
    const dir = journalDir(record.runId);
    if (existsSync(join(dir, "run.json"))) {
      throw new RunctlError("INVALID_ARGUMENT", `Run ${record.runId} already exists in ${dir}; run ids must be unique.`);
    }
    mkdirSync(dir, { recursive: true });
    writeJsonAtomic(join(dir, "run.json"), record);
    writeFileSync(join(dir, "journal.jsonl"), "");
    const journal = new RunJournal(record.runId, record, [], { log: 0, events: 0 });
    void tryLockJournal(dir);
    journal.writer = true;
    journal.claimWriter();
    return journal;
  }

  /** Reads an existing journal (a torn last line from a crash is dropped). */
  static open(runId: string): RunJournal {
    const dir = journalDir(runId);
    const recordPath = join(dir, "run.json");
    if (!existsSync(recordPath)) {
      throw new RunctlError("RUN_NOT_FOUND", `No run ${runId} in ${join(runctlHome(), "runs")}; set RUNCTL_HOME to the folder the run was started with.`);
    }
    const record = JSON.parse(readFileSync(recordPath, "utf8")) as RunRecord;
    const buf = readFileSync(join(dir, "journal.jsonl"));
    const events: RunEvent[] = [];
    let cursor: FollowCursor = { log: 0, events: 0 };
    let bytes = 0;
    for (const raw of buf.toString("utf8").split("\n")) {
      if (raw === "") continue;
      let line: JournalLine;
      try {
        line = JSON.parse(raw) as JournalLine;
      } catch {
        break; // a torn last line: the writer is still writing it, or crashed in it
      }
      events.push(line.e);
      if (line.c) cursor = line.c;
    }
    // Complete lines only, so following another writer resumes at a line start.
    const end = buf.lastIndexOf(0x0a) + 1;
    bytes = end;
    return new RunJournal(runId, record, events, cursor, bytes);
  }

  get record(): RunRecord {
    return this.recordValue;
  }

  get cursor(): FollowCursor {
    return this.cursorValue;
  }

  get dir(): string {
    return journalDir(this.runId);
  }

  /** Rewrites run.json with more facts (atomic). */
  update(patch: Partial<RunRecord>): void {
    this.recordValue = { ...this.recordValue, ...patch };
    writeJsonAtomic(join(this.dir, "run.json"), this.recordValue);
  }

  /** Appends an event, giving it the next `seq`; the cursor, when given, is stored with it. */
  append(input: RunEventInput, cursor?: FollowCursor): RunEvent {
    this.seq += 1;
    const event = { ...input, seq: this.seq, time: new Date().toISOString(), runId: this.runId } as RunEvent;
    if (cursor) this.cursorValue = cursor;
    const line: JournalLine = cursor ? { e: event, c: cursor } : { e: event };
    appendFileSync(join(this.dir, "journal.jsonl"), `${JSON.stringify(line)}\n`);
    return event;
  }

  /**
   * Takes the writer role if no process holds it (this one included: one follower per run per
   * process), then makes the journal ready to append ({@link claimWriter}). False: someone writes.
   */
  async tryClaimWriter(): Promise<boolean> {
    if (!(await tryLockJournal(this.dir))) return false;
    this.writer = true;
    this.claimWriter();
    return true;
  }

  /** Moves the writer role from `other` (an older instance of the same journal) to this one. */
  takeWriterFrom(other: RunJournal): void {
    if (other.runId !== this.runId || !other.writer) throw new RunctlError("INVALID_ARGUMENT", `No writer role of run ${other.runId} to take.`);
    other.writer = false;
    this.writer = true;
  }

  /** Makes the journal ready to append once this process holds the role: cuts a torn trailing line left by a crash and records this pid. */
  claimWriter(): void {
    const path = join(this.dir, "journal.jsonl");
    const size = statSync(path).size;
    if (size > 0) {
      const fd = openSync(path, "r");
      const last = Buffer.alloc(1);
      readSync(fd, last, 0, 1, size - 1);
      closeSync(fd);
      if (last[0] !== 0x0a) {
        const text = readFileSync(path);
        truncateSync(path, text.lastIndexOf(0x0a) + 1);
      }
    }
    writeFileSync(join(this.dir, "writer.pid"), `${process.pid}\n`);
  }

  /** Gives up the writer role (only if this process holds it). */
  releaseWriter(): void {
    if (!this.writer) return;
    this.writer = false;
    const path = join(this.dir, "writer.pid");
    try {
      if (Number(readFileSync(path, "utf8").trim()) === process.pid) writeFileSync(path, "");
    } catch {
      // Nothing to release.
    }
    unlockJournal(this.dir);
  }
}

/** Reads journal lines appended after byte `from` (for following a journal another process writes). */
export function readJournalFrom(runId: string, from: number): { events: RunEvent[]; next: number } {
  const path = join(journalDir(runId), "journal.jsonl");
  const buf = readFileSync(path);
  const end = buf.lastIndexOf(0x0a) + 1;
  if (end <= from) return { events: [], next: from };
  const events = buf
    .subarray(from, end)
    .toString("utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => (JSON.parse(l) as JournalLine).e);
  return { events, next: end };
}

function writeJsonAtomic(path: string, value: unknown): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`);
  renameSync(tmp, path);
}

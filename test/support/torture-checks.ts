/**
 * The torture test's invariants, checked through runctl's public API only (list, latest, verify,
 * download, events, logs): never by reading storage keys, so they hold whatever the key layout is.
 */
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Checkpoint, CheckpointEvent, CheckpointStore } from "runctl";

/** The invariants; each violation names one. */
export const INVARIANTS = [
  /** `latest()` names a checkpoint whose bytes do not verify, or whose download fails. */
  "latest-not-verified",
  /** A listed checkpoint does not download with every sha256 matching its manifest. */
  "listed-not-verified",
  /** A listed checkpoint verifies against its manifest, but the trainer's payload in it is incomplete (half-written and committed). */
  "checkpoint-incomplete",
  /** A checkpoint among the newest `keep` commits (a `checkpoint` event was seen) is no longer listed. */
  "committed-checkpoint-lost",
  /** The trainer exited 0 after saving its last step, but `latest()` is not that step (the final save was not committed). */
  "final-checkpoint-missing",
  /** Reading the checkpoints through the API threw. */
  "checkpoints-unreadable",
  /** The resumed trainer found the restored data incomplete (`RESUME_BAD`). */
  "resume-incomplete-data",
  /** A resume from a run with committed checkpoints did not restore one (run failed, or nothing restored). */
  "resume-failed",
  /** A process of the run (agent, trainer, daemonized child) is still running after the run ended. */
  "leftover-process",
  /** The `line <n>` lines seen through the API are not 1..k each once (or not all of them after a clean exit). */
  "log-lost-or-repeated",
  /** The run (or the reattach) did not end within the timeout. */
  "run-hung",
] as const;
/** One of {@link INVARIANTS}. */
export type Invariant = (typeof INVARIANTS)[number];

/** One broken invariant. */
export interface Violation {
  readonly invariant: Invariant;
  readonly detail: string;
}

const MAGIC = "TORTURE1";

/** Checks one trainer checkpoint file (header `TORTURE1 step= len= sha256=`, then the body); returns its step. */
export function checkPayload(data: Buffer, label: string): number {
  const nl = data.indexOf(0x0a);
  const header = nl < 0 ? "" : data.subarray(0, nl).toString("latin1");
  const m = /^TORTURE1 step=(\d+) len=(\d+) sha256=([0-9a-f]{64})$/.exec(header);
  if (!m) throw new Error(`${label}: no ${MAGIC} header (${data.length} bytes)`);
  const body = data.subarray(nl + 1);
  if (body.length !== Number(m[2])) throw new Error(`${label}: ${body.length} of ${m[2]} body bytes`);
  if (createHash("sha256").update(body).digest("hex") !== m[3]) throw new Error(`${label}: body sha256 differs from its header`);
  return Number(m[1]);
}

/** Checks a downloaded checkpoint (folder with model.bin + optim.bin of one step, or one file); returns its step. */
export function checkDownloaded(path: string, name: string): number {
  if (!statSync(path).isDirectory()) return checkPayload(readFileSync(path), name);
  const files = readdirSync(path).filter((f) => f.endsWith(".bin")).sort();
  if (files.join(",") !== "model.bin,optim.bin") throw new Error(`${name}: holds ${files.join(",") || "nothing"}, not model.bin and optim.bin`);
  const steps = new Set(files.map((f) => checkPayload(readFileSync(join(path, f)), `${name}/${f}`)));
  if (steps.size !== 1) throw new Error(`${name}: files of different steps ${[...steps].join(",")}`);
  return [...steps][0]!;
}

function errorText(err: unknown): string {
  if (err instanceof Error) return `${(err as { code?: string }).code ?? err.name}: ${err.message}`;
  return String(err);
}

/**
 * Checkpoint invariants of one run: `latest()` is undefined or verifies; every listed checkpoint
 * downloads (sha256-verified) and holds a complete payload; the newest `keep` commits seen as events are
 * still listed. Returns what is listed (for the resume check) with the violations.
 */
export async function checkCheckpoints(
  store: CheckpointStore,
  commits: readonly CheckpointEvent[],
  keep: number,
): Promise<{ listed: Checkpoint[]; latest: Checkpoint | undefined; violations: Violation[] }> {
  const violations: Violation[] = [];
  let listed: Checkpoint[] = [];
  let latest: Checkpoint | undefined;
  try {
    listed = await store.list();
    latest = await store.latest();
  } catch (err) {
    return { listed, latest, violations: [{ invariant: "checkpoints-unreadable", detail: errorText(err) }] };
  }
  const scratch = mkdtempSync(join(tmpdir(), "runctl-torture-dl-"));
  try {
    if (latest) {
      try {
        const v = await latest.verify();
        if (!v.ok) violations.push({ invariant: "latest-not-verified", detail: `${latest.name}: ${v.problems.map((p) => `${p.path} ${p.reason}`).join("; ")}` });
      } catch (err) {
        violations.push({ invariant: "latest-not-verified", detail: `${latest.name}: verify threw ${errorText(err)}` });
      }
    }
    // Every listed checkpoint is downloaded: download() checks every file's size and sha256 against
    // the manifest while streaming (the same check as verify(), without reading it all twice), and the
    // bytes are then checked against the trainer's own header.
    for (const [i, c] of listed.entries()) {
      let path: string;
      try {
        path = await c.download(join(scratch, String(i)));
      } catch (err) {
        const invariant = latest && c.name === latest.name ? "latest-not-verified" : "listed-not-verified";
        violations.push({ invariant, detail: `${c.name}: download threw ${errorText(err)}` });
        continue;
      }
      try {
        const step = checkDownloaded(path, c.name);
        if (c.step !== null && c.step !== step) violations.push({ invariant: "checkpoint-incomplete", detail: `${c.name}: listed as step ${c.step}, holds step ${step}` });
      } catch (err) {
        violations.push({ invariant: "checkpoint-incomplete", detail: `${c.name} (${c.totalBytes} bytes committed): ${(err as Error).message}` });
      }
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  // Retention keeps the newest `keep` commits; a name among them must still be there (a rewrite of
  // the same name may replace it, never remove it).
  const newest = [...commits].sort((a, b) => a.commitSeq - b.commitSeq).slice(-keep);
  const names = new Set(listed.map((c) => c.name));
  for (const name of new Set(newest.map((c) => c.name))) {
    if (!names.has(name)) violations.push({ invariant: "committed-checkpoint-lost", detail: `${name} was committed (event seen) and is among the newest ${keep}, but is not listed (listed: ${[...names].join(",") || "none"})` });
  }
  return { listed, latest, violations };
}

/**
 * The trainer's `line <n>` lines, as seen through the API, must be 1, 2, ..., k with none repeated;
 * when the trainer finished (`complete`: it exited 0, or its last line arrived), k must be every step.
 */
export function checkLogLines(lines: readonly string[], complete: boolean, steps: number): Violation[] {
  const numbers = lines.flatMap((l) => {
    const m = /^line (\d+)$/.exec(l);
    return m ? [Number(m[1])] : [];
  });
  const problems: string[] = [];
  const seen = new Set<number>();
  const dups = numbers.filter((n) => (seen.has(n) ? true : (seen.add(n), false)));
  if (dups.length > 0) problems.push(`repeated: ${[...new Set(dups)].slice(0, 5).join(",")}${dups.length > 5 ? ",..." : ""} (${dups.length} repeats)`);
  const firstGap = numbers.findIndex((n, i) => n !== i + 1);
  if (dups.length === 0 && firstGap >= 0) problems.push(`line ${firstGap + 1} expected at position ${firstGap + 1}, got line ${numbers[firstGap]}`);
  if (problems.length === 0 && complete && numbers.length !== steps) problems.push(`the trainer finished ${steps} steps but only lines 1..${numbers.length} arrived`);
  if (complete && !lines.includes("TRAINING_DONE")) problems.push("the trainer exited 0 but its last line (TRAINING_DONE) did not arrive");
  return problems.length === 0 ? [] : [{ invariant: "log-lost-or-repeated", detail: problems.join("; ") }];
}

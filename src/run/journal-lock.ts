import { createHash } from "node:crypto";
import { connect, createServer, type Server } from "node:net";
import { unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

/**
 * The writer lock of a local run journal: at most one process, and one follower in it, appends to a
 * run's journal. Node has no flock, so the lock is a listening unix socket, which the kernel closes
 * when the process dies however it dies (docs/decisions/0002-journal-writer-lock.md):
 * - Linux: an abstract-namespace socket `\0runctl-journal-<hash of the journal folder>`. Binding is
 *   the atomic test-and-set; nothing is left on disk, so a crash leaves no stale lock.
 * - elsewhere (macOS): a socket file in the temp folder; a file nobody accepts connections on is
 *   stale and is replaced.
 * Within this process a registry keyed by the folder answers at once (and synchronously), so two
 * `Runctl.attach(id)` in one process never both take over.
 */
const held = new Map<string, Server | null>();

function keyOf(dir: string): string {
  return createHash("sha256").update(resolve(dir)).digest("hex").slice(0, 32);
}

function socketPath(key: string): string {
  return process.platform === "linux" ? `\0runctl-journal-${key}` : join(tmpdir(), `runctl-journal-${key}.sock`);
}

function listen(path: string): Promise<Server | undefined> {
  return new Promise((done) => {
    const server = createServer((socket) => socket.destroy());
    server.once("error", () => done(undefined));
    server.listen({ path, exclusive: true }, () => {
      server.unref(); // the lock never keeps the process alive
      done(server);
    });
  });
}

/** Whether something accepts connections on the socket file (a live holder) — only for socket files. */
function answers(path: string): Promise<boolean> {
  return new Promise((done) => {
    const socket = connect({ path });
    socket.once("connect", () => {
      socket.destroy();
      done(true);
    });
    socket.once("error", () => done(false));
  });
}

/**
 * Takes the writer lock of the journal in `dir` unless a process (this one included) holds it.
 * Synchronous part first: a second call in this process made before the first one settles fails.
 */
export async function tryLockJournal(dir: string): Promise<boolean> {
  const key = keyOf(dir);
  if (held.has(key)) return false;
  held.set(key, null);
  const path = socketPath(key);
  let server = await listen(path);
  if (!server && !path.startsWith("\0") && !(await answers(path))) {
    // A socket file left by a dead process: nobody accepts on it.
    try {
      unlinkSync(path);
    } catch {
      // another process replaced it first; listening again tells who won
    }
    server = await listen(path);
  }
  if (held.get(key) !== null) {
    server?.close(); // released (unlockJournal) while it was being taken
    return false;
  }
  if (!server) {
    held.delete(key);
    return false;
  }
  held.set(key, server);
  return true;
}

/** Whether this process holds (or is taking) the writer lock of the journal in `dir`. */
export function journalLockedHere(dir: string): boolean {
  return held.has(keyOf(dir));
}

/** Releases this process's writer lock of the journal in `dir` (no-op when not held). */
export function unlockJournal(dir: string): void {
  const key = keyOf(dir);
  const server = held.get(key);
  if (server === undefined) return;
  held.delete(key);
  server?.close();
}

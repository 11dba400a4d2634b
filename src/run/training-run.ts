import { RunctlError } from "../errors/runctl-error.js";
import { checkpointStore, type CheckpointStore } from "../checkpoints/checkpoint-store.js";
import type { Storage } from "../storage/types.js";
import type { AsyncQueue } from "../util/async-queue.js";
import type { RunEvent } from "./events.js";
import type { RunResult } from "./run-result.js";

/** How a canceled run is stopped. `detach` leaves it running and stops following it. */
export type CancelStrategy = "detach" | "interrupt" | "kill";

/** @internal What the engine hands a {@link TrainingRun}. */
export interface RunControl {
  readonly runId: string;
  readonly events: AsyncQueue<RunEvent>;
  readonly result: Promise<RunResult>;
  /** The checkpoint storage; known once the machine is (it may live on the machine itself). */
  storage(): Storage | undefined;
  cancel(strategy: CancelStrategy): Promise<void>;
}

/** Options of {@link TrainingRun.logs}. */
export interface LogsOptions {
  /** Index of the first line to return (0 is the first line of the run). @defaultValue 0 */
  readonly from?: number | undefined;
}

/**
 * A started run. Await it for the {@link RunResult}; iterate it for every {@link RunEvent} from the
 * first (each iteration starts at the beginning). Awaiting twice never starts it twice.
 *
 * @example
 * ```ts
 * const run = plan.train("train.py");
 * for await (const e of run) if (e.type === "metric") console.log(e.values);
 * const { status, exitCode } = await run;
 * ```
 */
export class TrainingRun implements PromiseLike<RunResult>, AsyncIterable<RunEvent> {
  /** The run's id (also the storage prefix of its checkpoints). */
  readonly runId: string;
  readonly #control: RunControl;

  /** @internal Created by `.train()` and `Runctl.attach()`. */
  constructor(control: RunControl) {
    this.runId = control.runId;
    this.#control = control;
  }

  /** Resolves with the {@link RunResult}; rejects only when the run could not be started or followed. */
  then<A = RunResult, B = never>(
    onFulfilled?: ((value: RunResult) => A | PromiseLike<A>) | null,
    onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    return this.#control.result.then(onFulfilled, onRejected);
  }

  /** Every event of the run from the first, then live ones until the `exit` event. */
  [Symbol.asyncIterator](): AsyncIterator<RunEvent> {
    return this.#control.events.iterate();
  }

  /** The same as iterating the run; here for readability (`for await (const e of run.events())`). */
  events(): AsyncIterable<RunEvent> {
    return { [Symbol.asyncIterator]: () => this.#control.events.iterate() };
  }

  /**
   * The output lines (setup and trainer), from line `from`, following until the run ends.
   *
   * @example
   * ```ts
   * for await (const line of run.logs({ from: 0 })) console.log(line);
   * ```
   */
  async *logs(options: LogsOptions = {}): AsyncGenerator<string> {
    const from = options.from ?? 0;
    let index = 0;
    for await (const event of this.#control.events.iterate()) {
      if (event.type !== "log") continue;
      if (index++ >= from) yield event.line;
    }
  }

  /**
   * The run's committed checkpoints: list, latest, download (sha256-verified), prune.
   *
   * @example
   * ```ts
   * const latest = await run.checkpoints().latest();
   * await latest?.download("./ckpt");
   * ```
   */
  checkpoints(): CheckpointStore {
    const storage = this.#control.storage();
    if (!storage) {
      throw new RunctlError("CHECKPOINT_NOT_FOUND", `Run ${this.runId} has no checkpoint storage; configure .checkpoints({ storage }).`);
    }
    return checkpointStore(storage, this.runId);
  }

  /**
   * Stops the run: `interrupt` sends SIGTERM (the trainer saves, the final checkpoint is committed,
   * SIGKILL after the grace time), `kill` sends SIGKILL at once, `detach` stops following and
   * leaves the run going (reattach with `Runctl.attach(runId)`). Resolves once the request is
   * delivered; await the run for its end.
   *
   * @example
   * ```ts
   * await run.cancel({ strategy: "interrupt" });
   * const { status } = await run; // "canceled"
   * ```
   */
  cancel(options: { readonly strategy?: CancelStrategy | undefined } = {}): Promise<void> {
    return this.#control.cancel(options.strategy ?? "interrupt");
  }

  /** `await using run = ...`: leaving the scope interrupts a run still going and waits for its end. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#control.cancel("interrupt").catch(() => {});
    await this.#control.result.catch(() => {});
  }
}

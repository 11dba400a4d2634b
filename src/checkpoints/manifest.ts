import type { z } from "zod";
import { lazySchema } from "../util/lazy-schema.js";

/** The JSON schema of a checkpoint's `manifest.json` (docs/agent-protocol.md). */
export const checkpointManifestSchema = lazySchema((z) => z.object({
  version: z.literal(1),
  runId: z.string().min(1),
  name: z.string().min(1),
  kind: z.enum(["file", "dir"]),
  step: z.number().int().nullable(),
  seq: z.number().int().nonnegative(),
  createdAt: z.string(),
  hyperparamsHash: z.string().nullable().optional(),
  files: z.array(z.object({ path: z.string().min(1), size: z.number().int().nonnegative(), sha256: z.string().regex(/^[0-9a-f]{64}$/) })),
  totalBytes: z.number().int().nonnegative(),
}) satisfies z.ZodType<CheckpointManifest>);

/**
 * A committed checkpoint's manifest: every file with its size and sha256, written last.
 * Exactly the output type of `checkpointManifestSchema` (checked at compile time).
 *
 * @example
 * ```ts
 * const m: CheckpointManifest = (await run.checkpoints().latest())!.manifest;
 * console.log(m.step, m.files.length);
 * ```
 */
export interface CheckpointManifest {
  /** Manifest format version; always 1. */
  version: 1;
  /** The run that committed the checkpoint. */
  runId: string;
  /** The checkpoint's name (its file or folder name in the trainer's checkpoint folder). */
  name: string;
  /** `file`: a single file (`files[0].path` is `name`); `dir`: a folder (paths relative to it). */
  kind: "file" | "dir";
  /** Training step: from `<name>.done`, else the last number in `name`; null when neither gives one. */
  step: number | null;
  /** Commit number within the run: higher for every later commit; readers order by it. Names the storage generation (`g<seq>`). */
  seq: number;
  /** When the checkpoint was committed (ISO 8601). */
  createdAt: string;
  /** sha256 of the run's hyperparameters as canonical JSON; null or absent when unknown. */
  hyperparamsHash?: string | null | undefined;
  /** Every file of the checkpoint. */
  files: {
    /** Path relative to the checkpoint (POSIX); stored under `<gen>/files/<path>` (see `checkpointKeys()`). */
    path: string;
    /** Size in bytes. */
    size: number;
    /** sha256 of the file's bytes, lowercase hex. */
    sha256: string;
  }[];
  /** Sum of the files' sizes in bytes. */
  totalBytes: number;
}

/** Compile-time proof that {@link CheckpointManifest} is exactly what the schema parses to. */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
type Assert<T extends true> = T;
type ManifestMatchesSchema = Assert<Equal<z.infer<ReturnType<typeof checkpointManifestSchema>>, CheckpointManifest>>;

/**
 * Storage keys of the checkpoint layout (docs/agent-protocol.md, docs/checkpoints.md). Each commit of a
 * checkpoint is one generation, `<runId>/checkpoints/<name>/g<seq, 8 digits>/`, holding `files/<path>`
 * and, written last, `manifest.json`. A generation without a manifest does not exist for readers; per
 * name, the highest generation with a manifest is the committed one. `LATEST` holds a name.
 */
export const checkpointKeys = {
  runPrefix: (runId: string): string => `${runId}/`,
  checkpointsPrefix: (runId: string): string => `${runId}/checkpoints/`,
  /** Every generation of one checkpoint name. */
  namePrefix: (runId: string, name: string): string => `${runId}/checkpoints/${name}/`,
  /** The folder name of the generation written by commit `seq`. */
  generation: (seq: number): string => `g${String(seq).padStart(8, "0")}`,
  generationPrefix: (runId: string, name: string, seq: number): string => `${runId}/checkpoints/${name}/${checkpointKeys.generation(seq)}/`,
  manifest: (runId: string, name: string, seq: number): string => `${checkpointKeys.generationPrefix(runId, name, seq)}manifest.json`,
  file: (runId: string, name: string, seq: number, path: string): string => `${checkpointKeys.generationPrefix(runId, name, seq)}files/${path}`,
  filesPrefix: (runId: string, name: string, seq: number): string => `${checkpointKeys.generationPrefix(runId, name, seq)}files/`,
  latest: (runId: string): string => `${runId}/LATEST`,
  /**
   * Parses a key below `checkpointsPrefix(runId)` (the part after it): the name and commit seq of a
   * generation's manifest, else undefined.
   */
  parseManifest: (rest: string): { name: string; seq: number } | undefined => {
    const match = /^([^/]+)\/g(\d+)\/manifest\.json$/.exec(rest);
    if (!match?.[1] || !match[2]) return undefined;
    return { name: match[1], seq: Number(match[2]) };
  },
};

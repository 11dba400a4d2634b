import { z } from "zod";

/** The JSON schema of a checkpoint's `manifest.json` (docs/agent-protocol.md). */
export const checkpointManifestSchema = z.object({
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
});

/**
 * A committed checkpoint's manifest: every file with its size and sha256, written last.
 *
 * @example
 * ```ts
 * const m: CheckpointManifest = (await run.checkpoints().latest())!.manifest;
 * console.log(m.step, m.files.length);
 * ```
 */
export type CheckpointManifest = z.infer<typeof checkpointManifestSchema>;

/** Storage keys of the checkpoint layout (see docs/agent-protocol.md). */
export const checkpointKeys = {
  runPrefix: (runId: string): string => `${runId}/`,
  checkpointsPrefix: (runId: string): string => `${runId}/checkpoints/`,
  manifest: (runId: string, name: string): string => `${runId}/checkpoints/${name}/manifest.json`,
  file: (runId: string, name: string, path: string): string => `${runId}/checkpoints/${name}/files/${path}`,
  filesPrefix: (runId: string, name: string): string => `${runId}/checkpoints/${name}/files/`,
  latest: (runId: string): string => `${runId}/LATEST`,
};

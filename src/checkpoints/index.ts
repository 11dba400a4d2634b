export { checkpointStore } from "./checkpoint-store.js";
export type { Checkpoint, CheckpointStore, CheckpointVerification, CheckpointCallOptions } from "./checkpoint-store.js";
export { checkpointManifestSchema, checkpointKeys } from "./manifest.js";
export type { CheckpointManifest } from "./manifest.js";

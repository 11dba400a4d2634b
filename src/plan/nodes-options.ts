import { RunctlError } from "../errors/runctl-error.js";
import { lazySchema } from "../util/lazy-schema.js";
import type { Provider } from "../providers/types.js";
import type { RunSpecNodes } from "../engine/run-spec.js";
import { parseOptions } from "./validate.js";

/** Options of `.nodes(count, options)`. */
export interface NodesOptions {
  /** Processes per node (`torchrun --nproc_per_node`), usually the node's GPU count. @defaultValue 1 */
  readonly procsPerNode?: number | undefined;
  /** Rendezvous port on rank 0 (`--master_port`). @defaultValue 29500 */
  readonly masterPort?: number | undefined;
  /**
   * `"torchrun"`: each node runs `python -m torch.distributed.run … script args` (torchrun's contract,
   * a bare DDP script works unchanged); `"none"`: the script itself on every node, with the
   * `RUNCTL_*`/`PET_*` variables to set up its own process group. @defaultValue `"torchrun"`
   */
  readonly launcher?: "torchrun" | "none" | undefined;
  /** The node whose `RUNCTL_CHECKPOINT_DIR` is committed. @defaultValue 0 */
  readonly checkpointsFromNode?: number | undefined;
}

const schema = lazySchema((z) => z.strictObject({
  procsPerNode: z.number().int().min(1).max(1024).optional(),
  masterPort: z.number().int().min(1).max(65535).optional(),
  launcher: z.enum(["torchrun", "none"]).optional(),
  checkpointsFromNode: z.number().int().min(0).optional(),
}));

/**
 * Validates `.nodes(count, options)` against the provider, defaults applied: INVALID_ARGUMENT for a
 * bad count or option, UNSUPPORTED for more nodes than the provider can hand out as one gang.
 */
export function parseNodes(count: unknown, options: NodesOptions | undefined, provider: Provider): RunSpecNodes {
  if (typeof count !== "number" || !Number.isInteger(count) || count < 1 || count > 1024) {
    throw new RunctlError("INVALID_ARGUMENT", `.nodes(count): count must be an integer from 1 to 1024, got ${JSON.stringify(count)}.`);
  }
  const parsed = parseOptions(schema, options, ".nodes()");
  const max = provider.maxNodes;
  if (max !== undefined && count > max) {
    throw new RunctlError(
      "UNSUPPORTED",
      max === 1
        ? `.nodes(${count}): the ${provider.name} provider is one machine; use sshHosts([...]) or ec2() for multi-node training.`
        : `.nodes(${count}): the ${provider.name} provider has only ${max} machines, so a gang of ${count} could never start.`,
    );
  }
  const checkpointsFromNode = parsed.checkpointsFromNode ?? 0;
  if (checkpointsFromNode >= count) throw new RunctlError("INVALID_ARGUMENT", `.nodes(${count}): checkpointsFromNode must be a node rank below ${count}, got ${checkpointsFromNode}.`);
  return { count, procsPerNode: parsed.procsPerNode ?? 1, masterPort: parsed.masterPort ?? 29500, launcher: parsed.launcher ?? "torchrun", checkpointsFromNode };
}

import { posix } from "node:path";
import { RunctlError } from "../errors/runctl-error.js";
import { lazySchema } from "../util/lazy-schema.js";
import type { RunSpecContainer } from "../engine/run-spec.js";
import { parseOptions, validateEnv } from "./validate.js";

/**
 * A folder of the machine mounted into the container: a path, or a volume runctl mounted
 * (what `mountVolume()` returns: anything with a `mountPoint`).
 */
export interface ContainerMount {
  /** The folder on the machine: an absolute path, or `{ mountPoint }` (an EBS volume `mountVolume()` mounted). */
  readonly source: string | { readonly mountPoint: string };
  /** Where the container sees it (absolute; not `/` and not under `/runctl`, which runctl uses). */
  readonly target: string;
  /** Mount read-only. @defaultValue false */
  readonly readOnly?: boolean | undefined;
}

/** Options of `.container(image, options)`. */
export interface ContainerOptions {
  /** Folders of the machine to mount into the container. @defaultValue `[]` */
  readonly mounts?: readonly ContainerMount[] | undefined;
  /**
   * GPUs for the container: `"auto"` gives every NVIDIA GPU when the machine has them and the NVIDIA
   * container runtime, and none otherwise; `"all"` or a count fails the run before anything starts
   * (GPU_UNAVAILABLE) on a machine that cannot give them; `"none"` gives none. @defaultValue `"auto"`
   */
  readonly gpus?: "auto" | "all" | "none" | number | undefined;
  /** `/dev/shm` size (`--shm-size`, e.g. `"8g"`); PyTorch data loader workers need more than Docker's 64 MB. @defaultValue the runtime's */
  readonly shmSize?: string | undefined;
  /** The container's network: `"host"` (the machine's own; what multi-node needs), `"none"`, or a network name. @defaultValue `"host"` */
  readonly network?: string | undefined;
  /** Variables only the container gets (on top of `.env()` and runctl's `RUNCTL_*`). @defaultValue `{}` */
  readonly env?: Readonly<Record<string, string>> | undefined;
  /** The container CLI on the machine. @defaultValue `"docker"` */
  readonly runtime?: "docker" | "podman" | undefined;
  /** When to pull: `"missing"` (only if not on the machine), `"always"`, or `"never"` (a local image). @defaultValue `"missing"` */
  readonly pull?: "missing" | "always" | "never" | undefined;
  /** The daemon the CLI talks to (`DOCKER_HOST` / `CONTAINER_HOST`, e.g. `unix:///run/user/1000/docker.sock`). @defaultValue the CLI's default */
  readonly host?: string | undefined;
  /** The user the trainer runs as (`--user`). @defaultValue the machine user's uid:gid (root stays root) */
  readonly user?: string | undefined;
}

/** Where the run's folders appear inside the container. */
export const CONTAINER_PATHS = {
  /** The synced code, the working directory. */
  code: "/runctl/code",
  /** `RUNCTL_CHECKPOINT_DIR`. */
  checkpoints: "/runctl/checkpoints",
  /** `RUNCTL_DATA_DIR` (the first `.data()` folder). */
  data: "/runctl/data",
  /** `RUNCTL_OUTPUT_DIR`. */
  outputs: "/runctl/outputs",
  /** The cached venvs of `.setup({ requirements })`, made inside the image. */
  venvs: "/runctl/venvs",
} as const;

const IMAGE = /^[a-z0-9][a-z0-9._/:@+-]*$/i;
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

const schema = lazySchema((z) => z.strictObject({
  mounts: z.array(z.unknown()).optional(),
  gpus: z.union([z.enum(["auto", "all", "none"]), z.number().int().min(1).max(64)]).optional(),
  shmSize: z.string().regex(/^[0-9]+[bkmg]?$/i, 'a size such as "8g" or "512m"').optional(),
  network: z.string().regex(NAME, '"host", "none" or a network name').optional(),
  env: z.record(z.string(), z.string()).optional(),
  runtime: z.enum(["docker", "podman"]).optional(),
  pull: z.enum(["missing", "always", "never"]).optional(),
  host: z.string().min(1).max(4096).regex(/^[^\0\n]*$/, "no NUL or newline").optional(),
  user: z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$/, "a user name or uid, optionally with :group").optional(),
}));

/** An absolute machine path that `--mount` can carry. */
function machinePath(value: unknown, what: string): string {
  if (typeof value !== "string" || !value.startsWith("/") || /[\0\n,]/.test(value) || value.split("/").includes("..")) {
    throw new RunctlError("INVALID_ARGUMENT", `.container(): ${what} must be an absolute path without commas or "..", got ${JSON.stringify(value)}.`);
  }
  const normal = posix.normalize(value);
  return normal.length > 1 ? normal.replace(/\/+$/, "") : normal;
}

function parseMount(m: unknown, i: number): RunSpecContainer["mounts"][number] {
  if (typeof m !== "object" || m === null) throw new RunctlError("INVALID_ARGUMENT", `.container(): mounts[${i}] must be { source, target, readOnly? }.`);
  const { source, target, readOnly, ...rest } = m as Record<string, unknown>;
  const extra = Object.keys(rest);
  if (extra.length > 0) throw new RunctlError("INVALID_ARGUMENT", `.container(): mounts[${i}] has unknown option ${extra[0]}.`);
  const src = typeof source === "object" && source !== null && "mountPoint" in source ? (source as { mountPoint: unknown }).mountPoint : source;
  const from = machinePath(src, `mounts[${i}].source`);
  const to = machinePath(target, `mounts[${i}].target`);
  if (to === "/" || to === "/runctl" || to.startsWith("/runctl/")) {
    throw new RunctlError("INVALID_ARGUMENT", `.container(): mounts[${i}].target ${to} is / or under /runctl, where runctl mounts the run's folders.`);
  }
  if (readOnly !== undefined && typeof readOnly !== "boolean") throw new RunctlError("INVALID_ARGUMENT", `.container(): mounts[${i}].readOnly must be a boolean.`);
  return { source: from, target: to, readOnly: readOnly === true };
}

/**
 * Validates `.container(image, options)` and applies its defaults: a typed INVALID_ARGUMENT at the
 * call for a bad image reference, path, size or name, before anything is created.
 */
export function parseContainer(image: unknown, options: ContainerOptions | undefined): RunSpecContainer {
  if (typeof image !== "string" || image.length > 512 || !IMAGE.test(image)) {
    throw new RunctlError("INVALID_ARGUMENT", `.container(image): image must be a reference such as "python:3.11-slim" or "ghcr.io/org/train@sha256:…", got ${JSON.stringify(image)}.`);
  }
  const parsed = parseOptions(schema, options, ".container()");
  const mounts = (parsed.mounts ?? []).map(parseMount);
  const targets = new Set<string>();
  for (const m of mounts) {
    if (targets.has(m.target)) throw new RunctlError("INVALID_ARGUMENT", `.container(): ${m.target} is mounted twice.`);
    targets.add(m.target);
  }
  const env = validateEnv(parsed.env ?? {});
  return {
    image,
    runtime: parsed.runtime ?? "docker",
    pull: parsed.pull ?? "missing",
    gpus: parsed.gpus ?? "auto",
    network: parsed.network ?? "host",
    shmSize: parsed.shmSize ?? null,
    user: parsed.user ?? null,
    host: parsed.host ?? null,
    env,
    mounts,
  };
}

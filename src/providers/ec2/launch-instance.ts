import { RunInstancesCommand, TerminateInstancesCommand, type EC2Client, type Instance, type RunInstancesCommandInput } from "@aws-sdk/client-ec2";
import { RunctlError } from "../../errors/runctl-error.js";
import { CAPACITY_ERROR_CODES, awsErrorCode } from "../../aws/aws-errors.js";
import { recordResourceCreated, recordResourceDeleted } from "../../ledger/resource-ledger.js";
import { describeInstance, endedForCapacity } from "./instance-state.js";
import type { MachineImage } from "./machine-image.js";
import { awsCall } from "../../aws/aws-call.js";
import { pollUntil } from "../../aws/aws-poll.js";
import { TAG, toAwsTags } from "./tags.js";

/** Where one launch attempt goes: a subnet, a zone, or wherever EC2 likes. */
export type Placement = { readonly subnetId: string } | { readonly availabilityZone: string } | Record<string, never>;

/** One launch attempt that did not give a running instance. */
export interface LaunchAttempt {
  readonly market: "spot" | "on-demand";
  readonly placement: string;
  /** AWS's error or state reason code (`InsufficientInstanceCapacity`, `SpotMaxPriceTooLow`, …). */
  readonly code: string;
  readonly instanceId?: string | undefined;
}

/** What {@link launchInstance} needs. */
export interface LaunchRequest {
  readonly ec2: EC2Client;
  readonly region: string;
  readonly runId: string;
  /**
   * Which launch of the run this is (1, 2, ...: a gang's nodes, a recovery's replacements): part of
   * the idempotency token, which must differ between launches and stay the same across retries of one.
   */
  readonly launchSeq: number;
  readonly instanceType: string;
  readonly image: MachineImage;
  readonly rootVolume: { readonly sizeGb: number; readonly type: "gp3" | "gp2" | "io1" | "io2"; readonly iops?: number | undefined; readonly encrypted: boolean };
  readonly keyName?: string | undefined;
  readonly securityGroupIds: readonly string[];
  readonly instanceProfile?: string | undefined;
  readonly userData: string;
  readonly tags: Readonly<Record<string, string>>;
  /** Spot settings, or null for on-demand only. */
  readonly spot: { readonly maxPriceUsd?: number | undefined; readonly fallbackToOnDemand: boolean } | null;
  /** Tried in order for each market. */
  readonly placements: readonly Placement[];
  readonly runningTimeoutMs: number;
  readonly pollMs: number;
  readonly signal?: AbortSignal | undefined;
  /** Told every instance id as soon as EC2 accepts it (the caller's cleanup waits for them). */
  readonly onInstance?: ((instanceId: string) => void) | undefined;
}

/** A running instance and how it was obtained. */
export interface LaunchedInstance {
  readonly instance: Instance;
  readonly market: "spot" | "on-demand";
  /** Attempts that failed for want of capacity before this one. */
  readonly attempts: readonly LaunchAttempt[];
  /** Spot was asked for and on-demand was launched instead. */
  readonly fellBackToOnDemand: boolean;
}

function describePlacement(p: Placement): string {
  if ("subnetId" in p) return String(p.subnetId);
  if ("availabilityZone" in p) return String(p.availabilityZone);
  return "any zone";
}

/** The RunInstances input of one attempt: every resource tagged at launch, shutdown = terminate, IMDSv2 only. */
export function runInstancesInput(req: LaunchRequest, market: "spot" | "on-demand", placement: Placement, attempt: number): RunInstancesCommandInput {
  const tags = toAwsTags(req.tags);
  return {
    ImageId: req.image.imageId,
    InstanceType: req.instanceType as never,
    MinCount: 1,
    MaxCount: 1,
    // Idempotent: a retried (throttled, timed-out) call never launches a second instance.
    ClientToken: `${req.runId.slice(0, 48)}-${req.launchSeq}-${attempt}`,
    // The agent's own shutdown (budget, time limit, leak backstop) must end billing, not just stop.
    InstanceInitiatedShutdownBehavior: "terminate",
    MetadataOptions: { HttpTokens: "required", HttpEndpoint: "enabled", HttpPutResponseHopLimit: 1 },
    BlockDeviceMappings: [
      {
        DeviceName: req.image.rootDeviceName,
        Ebs: { VolumeSize: req.rootVolume.sizeGb, VolumeType: req.rootVolume.type, DeleteOnTermination: true, Encrypted: req.rootVolume.encrypted, Iops: req.rootVolume.iops },
      },
    ],
    UserData: req.userData,
    ...(req.keyName ? { KeyName: req.keyName } : {}),
    ...("subnetId" in placement ? { SubnetId: String(placement.subnetId) } : {}),
    ...("availabilityZone" in placement ? { Placement: { AvailabilityZone: String(placement.availabilityZone) } } : {}),
    ...(req.securityGroupIds.length > 0 ? { SecurityGroupIds: [...req.securityGroupIds] } : {}),
    ...(req.instanceProfile ? { IamInstanceProfile: { Name: req.instanceProfile } } : {}),
    ...(market === "spot"
      ? {
          InstanceMarketOptions: {
            MarketType: "spot",
            SpotOptions: { SpotInstanceType: "one-time", InstanceInterruptionBehavior: "terminate", MaxPrice: req.spot?.maxPriceUsd?.toFixed(5) },
          },
        }
      : {}),
    TagSpecifications: [
      { ResourceType: "instance", Tags: tags },
      { ResourceType: "volume", Tags: tags },
      { ResourceType: "network-interface", Tags: tags },
      ...(market === "spot" ? [{ ResourceType: "spot-instances-request" as const, Tags: tags }] : []),
    ],
  };
}

class EndedBeforeRunning extends Error {
  constructor(readonly instance: Instance) {
    super(`instance ${instance.InstanceId} ended before running (${instance.StateReason?.Code ?? "no reason"}: ${instance.StateReason?.Message ?? ""})`);
  }
}

/**
 * Launches one instance and waits for `running`. Spot goes first through every placement; a
 * capacity error (InsufficientInstanceCapacity, SpotMaxPriceTooLow, an instance that ends at once
 * for want of capacity) moves to the next placement, then to on-demand when allowed. Anything else
 * fails at once. An instance that never reaches running is terminated before the error is thrown.
 */
export async function launchInstance(req: LaunchRequest): Promise<LaunchedInstance> {
  const markets: ("spot" | "on-demand")[] = req.spot ? (req.spot.fallbackToOnDemand ? ["spot", "on-demand"] : ["spot"]) : ["on-demand"];
  const placements = req.placements.length > 0 ? req.placements : [{}];
  const attempts: LaunchAttempt[] = [];
  let attempt = 0;
  for (const market of markets) {
    for (const placement of placements) {
      attempt += 1;
      const input = runInstancesInput(req, market, placement, attempt);
      let instanceId: string | undefined;
      try {
        const out = await awsCall("RunInstances", (http) => req.ec2.send(new RunInstancesCommand(input), http), { signal: req.signal });
        instanceId = out.Instances?.[0]?.InstanceId;
      } catch (err) {
        const code = awsErrorCode((err as { cause?: unknown }).cause) ?? "";
        if (CAPACITY_ERROR_CODES.has(code)) {
          attempts.push({ market, placement: describePlacement(placement), code });
          continue;
        }
        throw err;
      }
      if (!instanceId) throw new RunctlError("CLOUD_ERROR", "RunInstances returned no instance id.");
      req.onInstance?.(instanceId);
      // Recorded before anything else can fail: a crash from here on never leaves an unknown instance.
      recordResourceCreated({
        kind: "instance",
        id: instanceId,
        provider: "ec2",
        region: req.region,
        runId: req.runId,
        createdAt: new Date().toISOString(),
        ...(req.tags[TAG.expiresAt] ? { expiresAt: req.tags[TAG.expiresAt] } : {}),
        tags: req.tags,
      });
      try {
        const instance = await waitForRunning(req.ec2, instanceId, { timeoutMs: req.runningTimeoutMs, pollMs: req.pollMs, signal: req.signal });
        return { instance, market, attempts, fellBackToOnDemand: req.spot !== null && market === "on-demand" };
      } catch (err) {
        await terminateInstance(req.ec2, instanceId, { pollMs: req.pollMs, timeoutMs: 120_000 }).catch(() => {});
        if (err instanceof EndedBeforeRunning && endedForCapacity(err.instance)) {
          attempts.push({ market, placement: describePlacement(placement), code: err.instance.StateReason?.Code ?? "capacity", instanceId });
          continue;
        }
        if (err instanceof EndedBeforeRunning) {
          throw new RunctlError("PROVISION_FAILED", `Instance ${instanceId} (${req.instanceType}, ${market}) ended before running: ${err.instance.StateReason?.Code ?? "?"} ${err.instance.StateReason?.Message ?? ""}`.trim(), {
            details: { instanceId, stateReason: err.instance.StateReason?.Code },
          });
        }
        throw err;
      }
    }
  }
  const tried = attempts.map((a) => `${a.market} in ${a.placement}: ${a.code}`).join("; ");
  const hint = req.spot && !req.spot.fallbackToOnDemand ? " Allow on-demand with spot: { fallbackToOnDemand: true }, or add availabilityZones." : " Try other availabilityZones or another instance type.";
  throw new RunctlError("CAPACITY_UNAVAILABLE", `No capacity for ${req.instanceType} in ${req.region} (${tried}).${hint}`, { retryable: true, details: { attempts } });
}

/** Polls DescribeInstances until the instance runs; PROVISION_TIMEOUT after `timeoutMs`. */
export async function waitForRunning(ec2: EC2Client, instanceId: string, options: { readonly timeoutMs: number; readonly pollMs: number; readonly signal?: AbortSignal | undefined }): Promise<Instance> {
  let last = "not visible yet";
  return pollUntil(
    async () => {
      const instance = await describeInstance(ec2, instanceId, options.signal);
      if (!instance) return undefined; // eventual consistency right after RunInstances
      last = instance.State?.Name ?? "unknown";
      if (last === "running") return instance;
      if (last === "pending") return undefined;
      throw new EndedBeforeRunning(instance);
    }, { poll: { initialMs: options.pollMs }, timeoutMs: options.timeoutMs, signal: options.signal, onTimeout: () => new RunctlError("PROVISION_TIMEOUT", `Instance ${instanceId} did not reach running within ${options.timeoutMs} ms (last state: ${last}); it was terminated.`, { retryable: true, details: { instanceId, lastState: last } }) });
}

/**
 * TerminateInstances, then confirm: polls until the instance is shutting-down or terminated (a
 * terminate call that AWS accepted is not proof). Recorded in the ledger.
 */
export async function terminateInstance(ec2: EC2Client, instanceId: string, options: { readonly timeoutMs: number; readonly pollMs: number; readonly signal?: AbortSignal | undefined }): Promise<void> {
  try {
    await awsCall("TerminateInstances", (http) => ec2.send(new TerminateInstancesCommand({ InstanceIds: [instanceId] }), http), { signal: options.signal });
  } catch (err) {
    if (awsErrorCode((err as { cause?: unknown }).cause) !== "InvalidInstanceID.NotFound") throw err;
  }
  await pollUntil(
    async () => {
      const instance = await describeInstance(ec2, instanceId, options.signal);
      const state = instance?.State?.Name;
      return !instance || state === "shutting-down" || state === "terminated" ? true : undefined;
    }, { poll: { initialMs: options.pollMs }, timeoutMs: options.timeoutMs, signal: options.signal, onTimeout: () => new RunctlError("CLOUD_ERROR", `Instance ${instanceId} was asked to terminate but is still not shutting down after ${options.timeoutMs} ms.`, { retryable: true }) });
  recordResourceDeleted("instance", instanceId);
}

/** Waits until a terminating instance is fully terminated (its network interface gone), bounded. */
export async function waitForTerminated(ec2: EC2Client, instanceId: string, options: { readonly timeoutMs: number; readonly pollMs: number; readonly signal?: AbortSignal | undefined }): Promise<void> {
  await pollUntil(
    async () => {
      const instance = await describeInstance(ec2, instanceId, options.signal);
      return !instance || instance.State?.Name === "terminated" ? true : undefined;
    }, { poll: { initialMs: options.pollMs }, timeoutMs: options.timeoutMs, signal: options.signal, onTimeout: () => new RunctlError("CLOUD_ERROR", `Instance ${instanceId} is still not terminated after ${options.timeoutMs} ms.`, { retryable: true }) });
}

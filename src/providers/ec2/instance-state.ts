import { DescribeInstancesCommand, type EC2Client, type Instance } from "@aws-sdk/client-ec2";
import { awsErrorCode } from "../../aws/aws-errors.js";
import type { MachineState } from "../types.js";
import { awsCall } from "../../aws/aws-call.js";

/** State reason codes that mean AWS took a spot instance back. */
const SPOT_RECLAIMED = new Set(["Server.SpotInstanceTermination", "Server.SpotInstanceShutdown"]);
/** State reason codes that mean there was no capacity after all (the launch was accepted, then failed). */
const NO_CAPACITY = new Set(["Server.InsufficientInstanceCapacity", "Server.SpotInstanceTermination"]);

/**
 * EC2's view of one instance, or undefined when it does not exist (yet: DescribeInstances is
 * eventually consistent right after RunInstances, so InvalidInstanceID.NotFound is "not yet").
 */
export async function describeInstance(ec2: EC2Client, instanceId: string, signal?: AbortSignal): Promise<Instance | undefined> {
  try {
    const out = await awsCall("DescribeInstances", (http) => ec2.send(new DescribeInstancesCommand({ InstanceIds: [instanceId] }), http), { signal: signal });
    return out.Reservations?.[0]?.Instances?.[0];
  } catch (err) {
    if (awsErrorCode((err as { cause?: unknown }).cause) === "InvalidInstanceID.NotFound") return undefined;
    throw err;
  }
}

/**
 * Cloud truth as runctl's {@link MachineState}: a spot instance AWS reclaimed is `interrupted`, not
 * merely `terminated`.
 */
export function machineStateOf(instance: Instance | undefined): MachineState {
  if (!instance) return "terminated";
  const reason = instance.StateReason?.Code ?? "";
  switch (instance.State?.Name) {
    case "pending":
      return "pending";
    case "running":
      return "running";
    case "stopping":
      return SPOT_RECLAIMED.has(reason) ? "interrupted" : "stopping";
    case "stopped":
      return SPOT_RECLAIMED.has(reason) ? "interrupted" : "stopped";
    case "shutting-down":
    case "terminated":
      return SPOT_RECLAIMED.has(reason) ? "interrupted" : "terminated";
    default:
      return "unknown";
  }
}

/** Whether an instance that ended before running did so for want of capacity (try elsewhere). */
export function endedForCapacity(instance: Instance): boolean {
  return NO_CAPACITY.has(instance.StateReason?.Code ?? "");
}

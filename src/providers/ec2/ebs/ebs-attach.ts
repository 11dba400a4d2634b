import { AttachVolumeCommand, DetachVolumeCommand } from "@aws-sdk/client-ec2";
import { RunctlError } from "../../../errors/runctl-error.js";
import { awsCall } from "../../../aws/aws-call.js";
import { awsErrorCode } from "../../../aws/aws-errors.js";
import type { EbsAttachResult, EbsDetachResult } from "./ebs-types.js";
import { validateDeviceName, validateInstanceId, validateVolumeId } from "./validate-volume.js";
import type { EbsContext } from "./ebs-context.js";
import { checkTimeout } from "./ebs-convert.js";
import type { AttachEbsVolumeOptions, DetachEbsVolumeOptions, EbsVolumes } from "./ebs-options.js";

/** Attaches a volume to an instance in its zone (see {@link EbsVolumes.attach}). */
export async function attachVolume(ctx: EbsContext, volumeId: string, instanceId: string, opts: AttachEbsVolumeOptions = {}): Promise<EbsAttachResult> {
  const { region, retry, client, describe, availabilityZoneOf, waitVolume, isAvailable, isAttachedTo } = ctx;
  validateVolumeId(volumeId);
  validateInstanceId(instanceId);
  const device = validateDeviceName(opts.device ?? "/dev/sdf");
  const timeoutMs = checkTimeout(opts.timeoutMs, 300_000);
  const wait = opts.wait ?? true;
  let vol = await describe(volumeId, opts.signal);
  if (!vol) throw new RunctlError("NOT_FOUND", `Volume ${volumeId} does not exist in ${region}.`);
  const az = await availabilityZoneOf(instanceId, opts.signal);
  if (vol.availabilityZone !== az) {
    throw new RunctlError("INVALID_ARGUMENT", `Volume ${volumeId} is in ${vol.availabilityZone} but instance ${instanceId} is in ${az}; a volume attaches only to instances in its zone (snapshot it and restore it in ${az}).`, {
      details: { volumeId, instanceId, volumeZone: vol.availabilityZone, instanceZone: az },
    });
  }
  const mine = vol.attachments.find((a) => a.instanceId === instanceId && a.state !== "detached" && a.state !== "detaching");
  if (mine) {
    const done = wait && mine.state !== "attached" ? await waitVolume(volumeId, `attached to ${instanceId}`, isAttachedTo(instanceId), timeoutMs, opts.signal) : vol;
    return { volumeId, instanceId, device: mine.device, state: done.attachments.find((a) => a.instanceId === instanceId)?.state ?? mine.state, alreadyAttached: true };
  }
  const other = vol.attachments.find((a) => a.state !== "detached");
  if (other || vol.state === "in-use") {
    throw new RunctlError("RESOURCE_IN_USE", `Volume ${volumeId} is attached to ${other?.instanceId ?? "another instance"}; detach it first.`, { details: { volumeId, attachedTo: other?.instanceId } });
  }
  if (vol.state === "creating") {
    if (!wait) throw new RunctlError("RESOURCE_IN_USE", `Volume ${volumeId} is still being created; wait for it to be available.`, { retryable: true, details: { volumeId } });
    vol = await waitVolume(volumeId, "available", isAvailable, timeoutMs, opts.signal);
  }
  let out;
  try {
    out = await awsCall("AttachVolume", (http) => client().send(new AttachVolumeCommand({ VolumeId: volumeId, InstanceId: instanceId, Device: device }), http), { retry, signal: opts.signal });
  } catch (err) {
    const code = awsErrorCode(err);
    if (code === "VolumeInUse" || code === "IncorrectState") {
      throw new RunctlError("RESOURCE_IN_USE", `Volume ${volumeId} cannot be attached now (${code}): it is attached elsewhere or changing state.`, { cause: err, details: { volumeId, instanceId } });
    }
    throw err;
  }
  if (!wait) return { volumeId, instanceId, device: out.Device ?? device, state: out.State ?? "attaching", alreadyAttached: false };
  const done = await waitVolume(volumeId, `attached to ${instanceId}`, isAttachedTo(instanceId), timeoutMs, opts.signal);
  const attachment = done.attachments.find((a) => a.instanceId === instanceId);
  return { volumeId, instanceId, device: attachment?.device ?? device, state: attachment?.state ?? "attached", alreadyAttached: false };
}

/** Detaches a volume from whatever holds it (see {@link EbsVolumes.detach}). */
export async function detachVolume(ctx: EbsContext, volumeId: string, opts: DetachEbsVolumeOptions): Promise<EbsDetachResult> {
  const { region, retry, client, describe, waitVolume, isAvailable } = ctx;
  validateVolumeId(volumeId);
  const timeoutMs = checkTimeout(opts.timeoutMs, 300_000);
  const vol = await describe(volumeId, opts.signal);
  if (!vol) throw new RunctlError("NOT_FOUND", `Volume ${volumeId} does not exist in ${region}.`);
  const attachment = vol.attachments.find((a) => a.state !== "detached");
  if (!attachment) return { volumeId, state: vol.state, detached: false };
  try {
    await awsCall(
      "DetachVolume",
      (http) => client().send(new DetachVolumeCommand({ VolumeId: volumeId, InstanceId: attachment.instanceId, ...(opts.force ? { Force: true } : {}) }), http),
      { retry, signal: opts.signal },
    );
  } catch (err) {
    // Already detached between our look and the call: the goal is reached.
    if (awsErrorCode(err) !== "IncorrectState") throw err;
  }
  if (!(opts.wait ?? true)) return { volumeId, instanceId: attachment.instanceId, state: "detaching", detached: true };
  const done = await waitVolume(volumeId, "available (detached)", isAvailable, timeoutMs, opts.signal);
  return { volumeId, instanceId: attachment.instanceId, state: done.state, detached: true };
}

import {
  DeleteKeyPairCommand,
  DeleteSecurityGroupCommand,
  DeleteSnapshotCommand,
  DeleteVolumeCommand,
  DescribeInstancesCommand,
  DescribeVolumesCommand,
  TerminateInstancesCommand,
} from "@aws-sdk/client-ec2";
import { RunctlError, abortError } from "../../errors/runctl-error.js";
import type { SweptResource } from "../sweep-types.js";
import { backoffDelayMs, pollUntil, sleepMs } from "../../aws/aws-poll.js";
import { awsCall } from "../../aws/aws-call.js";
import { awsErrorCode } from "../../aws/aws-errors.js";
import { deleteStagingFolder } from "./sweep-staging.js";
import { LIVE_STATES, type VolumeCandidate } from "./sweep-options.js";
import type { SweepSession } from "./sweep-session.js";
import type { SweepCandidates } from "./sweep-judge.js";
/** Step 3: instances first (their volumes, network interfaces and groups come free only once they are gone), then a bounded wait for them to shut down. */
export async function terminateSweptInstances(s: SweepSession, sweptInstances: readonly { resource: SweptResource; instanceId: string }[]): Promise<void> {
  const { timing, poll, retry, signal, client, warn, deleted, kept, ledgerDeleted, failed } = s;
  // 3. Instances first: their volumes, network interfaces and groups come free only once they are gone.
  const terminated: string[] = [];
  const terminate = async (batch: { resource: SweptResource; instanceId: string }[]): Promise<void> => {
    try {
      await awsCall("TerminateInstances", (http) => client.send(new TerminateInstancesCommand({ InstanceIds: batch.map((b) => b.instanceId) }), http), { retry, signal: signal });
      for (const b of batch) {
        deleted.push(b.resource);
        terminated.push(b.instanceId);
        ledgerDeleted("instance", b.instanceId);
      }
    } catch (err) {
      if (signal?.aborted) throw abortError(signal);
      // One bad id fails the whole call: repeat one by one to isolate it.
      if (batch.length > 1) {
        for (const b of batch) await terminate([b]);
        return;
      }
      const only = batch[0]!;
      if (awsErrorCode(err) === "InvalidInstanceID.NotFound") {
        deleted.push(only.resource);
        ledgerDeleted("instance", only.instanceId);
      } else failed(only.resource, err);
    }
  };
  for (let i = 0; i < sweptInstances.length; i += 50) await terminate(sweptInstances.slice(i, i + 50));
  if (terminated.length > 0) {
    try {
      await pollUntil(
        async () => {
          const out = await awsCall("DescribeInstances", (http) => client.send(new DescribeInstancesCommand({ InstanceIds: terminated }), http), { retry, signal: signal }).catch((err: unknown) => {
            // An id EC2 has already forgotten is as gone as it gets.
            if (awsErrorCode(err) === "InvalidInstanceID.NotFound") return { Reservations: [] };
            throw err;
          });
          const alive = (out.Reservations ?? []).flatMap((r) => r.Instances ?? []).filter((i) => LIVE_STATES.has(i.State?.Name ?? ""));
          return alive.length === 0 ? true : undefined;
        },
        { timeoutMs: timing.instanceWaitMs, poll, signal, describe: () => `instances ${terminated.join(", ")} to shut down` },
      );
    } catch (err) {
      if (signal?.aborted) throw abortError(signal);
      warn(`${(err as Error).message} Going on with the other resources; attached ones are kept for the next sweep.`);
    }
  }
}

/** Step 4: available volumes now; attached ones (to swept or dying instances) as they come free, within `timing.volumeWaitMs`. */
export async function deleteSweptVolumes(s: SweepSession, volumeCandidates: readonly VolumeCandidate[]): Promise<void> {
  const { now, timing, poll, retry, signal, client, warn, deleted, kept, ledgerDeleted, failed } = s;
  // 4. Volumes: available ones now; attached ones (to swept or dying instances) as they come free.
  const deleteVolume = async (c: VolumeCandidate): Promise<"deleted" | "attached" | "failed"> => {
    try {
      await awsCall("DeleteVolume", (http) => client.send(new DeleteVolumeCommand({ VolumeId: c.resource.id }), http), { retry, signal: signal });
    } catch (err) {
      if (signal?.aborted) throw abortError(signal);
      const code = awsErrorCode(err);
      if (code === "VolumeInUse" || code === "IncorrectState") return "attached";
      if (code !== "InvalidVolume.NotFound") {
        failed(c.resource, err);
        return "failed";
      }
      // Gone already (DeleteOnTermination took it with its instance).
    }
    deleted.push(c.resource);
    ledgerDeleted("volume", c.resource.id);
    return "deleted";
  };
  let waiting: VolumeCandidate[] = [];
  for (const c of volumeCandidates) {
    if (c.state === "available" && c.attachedTo.length === 0) {
      if ((await deleteVolume(c)) === "attached") waiting.push(c);
    } else waiting.push(c);
  }
  if (waiting.length > 0) {
    try {
      await pollUntil(
        async () => {
          const out = await awsCall("DescribeVolumes", (http) => client.send(new DescribeVolumesCommand({ VolumeIds: waiting.map((w) => w.resource.id) }), http), { retry, signal: signal }).catch((err: unknown) => {
            if (awsErrorCode(err) === "InvalidVolume.NotFound") return { Volumes: undefined };
            throw err;
          });
          const byId = new Map((out.Volumes ?? []).map((v) => [v.VolumeId, v]));
          const still: VolumeCandidate[] = [];
          for (const w of waiting) {
            const v = byId.get(w.resource.id);
            if (out.Volumes !== undefined && !v) {
              // Deleted with its instance.
              deleted.push(w.resource);
              ledgerDeleted("volume", w.resource.id);
              continue;
            }
            w.state = v?.State ?? w.state;
            w.attachedTo = (v?.Attachments ?? []).filter((a) => a.State !== "detached" && a.InstanceId).map((a) => a.InstanceId!);
            if (w.state === "deleting" || w.state === "deleted") {
              deleted.push(w.resource);
              ledgerDeleted("volume", w.resource.id);
            } else if (w.state === "available" || out.Volumes === undefined) {
              if ((await deleteVolume(w)) === "attached") still.push(w);
            } else still.push(w);
          }
          waiting = still;
          return waiting.length === 0 ? true : undefined;
        },
        { timeoutMs: timing.volumeWaitMs, poll, signal, describe: () => `volumes ${waiting.map((w) => w.resource.id).join(", ")} to come free` },
      );
    } catch (err) {
      if (signal?.aborted) throw abortError(signal);
      if (!(err instanceof RunctlError && err.code === "PROVISION_TIMEOUT")) warn(`Waiting for volumes failed: ${(err as Error).message}`);
    }
    for (const w of waiting) kept.push({ resource: w.resource, reason: `still attached to ${w.attachedTo.join(", ") || "an instance"}; the next sweep retries` });
  }
}

/** Step 4b: snapshots (independent of everything else). */
export async function deleteSweptSnapshots(s: SweepSession, snapshotCandidates: readonly SweptResource[]): Promise<void> {
  const { retry, signal, client, deleted, kept, ledgerDeleted, failed } = s;
  // 4b. Snapshots (independent of everything else).
  for (const resource of snapshotCandidates) {
    try {
      await awsCall("DeleteSnapshot", (http) => client.send(new DeleteSnapshotCommand({ SnapshotId: resource.id }), http), { retry, signal: signal });
      deleted.push(resource);
      ledgerDeleted("snapshot", resource.id);
    } catch (err) {
      if (signal?.aborted) throw abortError(signal);
      const code = awsErrorCode(err);
      if (code === "InvalidSnapshot.NotFound") {
        deleted.push(resource);
        ledgerDeleted("snapshot", resource.id);
      } else if (code === "InvalidSnapshot.InUse") kept.push({ resource, reason: "in use (an AMI is registered from it)" });
      else failed(resource, err);
    }
  }
}

/** Step 5: security groups, in parallel, repeating on DependencyViolation within `timing.dependencyRetries`. */
export async function deleteSweptSecurityGroups(s: SweepSession, groupCandidates: SweepCandidates["groupCandidates"]): Promise<void> {
  const { timing, poll, retry, signal, client, deleted, kept, ledgerDeleted, failed } = s;
  // 5. Security groups, in parallel: one may reference another, and a terminated instance's network interface lingers for a while.
  await Promise.all(
    groupCandidates.map(async ({ resource }) => {
      for (let attempt = 0; ; attempt++) {
        try {
          await awsCall("DeleteSecurityGroup", (http) => client.send(new DeleteSecurityGroupCommand({ GroupId: resource.id }), http), { retry, signal: signal });
        } catch (err) {
          if (signal?.aborted) throw abortError(signal);
          const code = awsErrorCode(err);
          if (code === "InvalidGroup.NotFound") break;
          if (code === "DependencyViolation" || code === "InvalidGroup.InUse") {
            if (attempt < timing.dependencyRetries) {
              await sleepMs(backoffDelayMs(attempt, poll), signal);
              continue;
            }
            kept.push({ resource, reason: "in use (a network interface or another group still refers to it); the next sweep retries" });
            return;
          }
          failed(resource, err);
          return;
        }
        break;
      }
      deleted.push(resource);
      ledgerDeleted("security-group", resource.id);
    }),
  );
}

/** Step 6: key pairs. */
export async function deleteSweptKeyPairs(s: SweepSession, keyCandidates: SweepCandidates["keyCandidates"]): Promise<void> {
  const { retry, signal, client, deleted, ledgerDeleted, failed } = s;
  // 6. Key pairs.
  for (const { item, resource } of keyCandidates) {
    try {
      await awsCall("DeleteKeyPair", (http) => client.send(new DeleteKeyPairCommand(item.KeyPairId ? { KeyPairId: item.KeyPairId } : { KeyName: resource.id }), http), { retry, signal: signal });
      deleted.push(resource);
      ledgerDeleted("key-pair", resource.id);
    } catch (err) {
      if (awsErrorCode(err) === "InvalidKeyPair.NotFound") {
        deleted.push(resource);
        ledgerDeleted("key-pair", resource.id);
      } else failed(resource, err);
    }
  }
}

/** Step 7: staging folders (marker last). */
export async function deleteSweptStagingFolders(s: SweepSession, stagingCandidates: SweepCandidates["stagingCandidates"]): Promise<void> {
  const { signal, deleted, ledgerDeleted, failed } = s;
  // 7. Staging folders (marker last).
  for (const { folder, resource } of stagingCandidates) {
    try {
      await deleteStagingFolder(folder, signal);
      deleted.push(resource);
      ledgerDeleted("s3-prefix", resource.id);
    } catch (err) {
      failed(resource, err);
    }
  }
}

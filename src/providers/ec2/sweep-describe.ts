import type { KeyPairInfo, SecurityGroup, Snapshot, Volume } from "@aws-sdk/client-ec2";
import {
  DescribeInstancesCommand,
  DescribeKeyPairsCommand,
  DescribeSecurityGroupsCommand,
  DescribeSnapshotsCommand,
  DescribeVolumesCommand,
  type Instance,
} from "@aws-sdk/client-ec2";
import { awsCall } from "../../aws/aws-call.js";
import { RUNCTL_TAG_FILTER } from "./sweep-options.js";
import type { SweepSession } from "./sweep-session.js";

/** Every runctl-tagged resource of the region, all pages. */
export interface DescribedResources {
  readonly instances: Instance[];
  readonly volumes: Volume[];
  readonly groups: SecurityGroup[];
  readonly keyPairs: KeyPairInfo[];
  readonly snapshots: Snapshot[];
}
/**
 * Step 1 of a sweep: the full picture first (every page), so nothing is deleted on a partial view.
 *
 * @example
 * ```ts
 * const all = await describeRunctlResources(openSweepSession({ region: "us-east-1" }));
 * ```
 */
export async function describeRunctlResources(s: SweepSession): Promise<DescribedResources> {
  const { region, retry, signal, client, deleted } = s;
  // 1. The full picture first (every page): nothing is deleted on a partial view.
  const instances: Instance[] = [];
  let token: string | undefined;
  do {
    const page = await awsCall(
      "DescribeInstances",
      (http) =>
        client.send(
          new DescribeInstancesCommand({
            Filters: [RUNCTL_TAG_FILTER, { Name: "instance-state-name", Values: ["pending", "running", "stopping", "stopped", "shutting-down"] }],
            MaxResults: 1000,
            NextToken: token,
          }),
          http,
        ),
      { retry, signal: signal },
    );
    for (const r of page.Reservations ?? []) for (const i of r.Instances ?? []) if (i.InstanceId) instances.push(i);
    token = page.NextToken || undefined;
  } while (token);

  const volumes: Volume[] = [];
  token = undefined;
  do {
    const page = await awsCall(
      "DescribeVolumes",
      (http) => client.send(new DescribeVolumesCommand({ Filters: [RUNCTL_TAG_FILTER], MaxResults: 500, NextToken: token }), http),
      { retry, signal: signal },
    );
    volumes.push(...(page.Volumes ?? []));
    token = page.NextToken || undefined;
  } while (token);

  const groups: SecurityGroup[] = [];
  token = undefined;
  do {
    const page = await awsCall(
      "DescribeSecurityGroups",
      (http) => client.send(new DescribeSecurityGroupsCommand({ Filters: [RUNCTL_TAG_FILTER], MaxResults: 1000, NextToken: token }), http),
      { retry, signal: signal },
    );
    groups.push(...(page.SecurityGroups ?? []));
    token = page.NextToken || undefined;
  } while (token);

  // DescribeKeyPairs has no pagination: one answer holds every key pair of the region.
  const keyPairs = (await awsCall("DescribeKeyPairs", (http) => client.send(new DescribeKeyPairsCommand({ Filters: [RUNCTL_TAG_FILTER] }), http), { retry, signal: signal })).KeyPairs ?? [];

  // Only this account's own snapshots (never public or shared ones that happen to carry the tag).
  const snapshots: Snapshot[] = [];
  token = undefined;
  do {
    const page = await awsCall(
      "DescribeSnapshots",
      (http) => client.send(new DescribeSnapshotsCommand({ OwnerIds: ["self"], Filters: [RUNCTL_TAG_FILTER], MaxResults: 1000, NextToken: token }), http),
      { retry, signal: signal },
    );
    snapshots.push(...(page.Snapshots ?? []));
    token = page.NextToken || undefined;
  } while (token);

  return { instances, volumes, groups, keyPairs, snapshots };
}

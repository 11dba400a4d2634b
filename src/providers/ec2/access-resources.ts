import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  AuthorizeSecurityGroupIngressCommand,
  type IpPermission,
  CreateSecurityGroupCommand,
  DeleteKeyPairCommand,
  DeleteSecurityGroupCommand,
  DescribeSubnetsCommand,
  DescribeVpcsCommand,
  ImportKeyPairCommand,
  type EC2Client,
} from "@aws-sdk/client-ec2";
import { RunctlError } from "../../errors/runctl-error.js";
import { awsErrorCode } from "../../aws/aws-errors.js";
import { recordResourceCreated, recordResourceDeleted } from "../../ledger/resource-ledger.js";
import { runctlHome } from "../../util/runctl-home.js";
import { awsCall } from "../../aws/aws-call.js";
import { pollUntil } from "../../aws/aws-poll.js";
import { toAwsTags, TAG } from "./tags.js";
import { generateEd25519KeyPair } from "./ed25519-key.js";

/** An ed25519 key pair made on this machine: the private half never leaves it. */
export interface LocalKeyPair {
  /** OpenSSH private key file (mode 600) under `$RUNCTL_HOME/keys/<runId>/`. */
  readonly privateKeyPath: string;
  /** `ssh-ed25519 BASE64`. */
  readonly publicKey: string;
}

/** Where a run's keys and pinned host key live on this machine. */
export function runKeysDir(runId: string): string {
  return join(runctlHome(), "keys", runId);
}

/**
 * Makes the run's login key and the instance's SSH host key. The host key goes to the instance in
 * its user data (cloud-init installs it), so the very first connection is verified against a key
 * runctl chose: no trust-on-first-use.
 */
export function makeRunKeys(runId: string): { readonly login: LocalKeyPair; readonly host: { readonly privateKey: string; readonly publicKey: string }; readonly dir: string } {
  const dir = runKeysDir(runId);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const login = generateEd25519KeyPair(`runctl-${runId}`);
  const host = generateEd25519KeyPair(`runctl-host-${runId}`);
  const privateKeyPath = join(dir, "id_ed25519");
  writeFileSync(privateKeyPath, login.private, { mode: 0o600 });
  chmodSync(privateKeyPath, 0o600);
  return { login: { privateKeyPath, publicKey: oneLine(login.public) }, host: { privateKey: host.private, publicKey: oneLine(host.public) }, dir };
}

/** Writes a known_hosts file that trusts exactly `publicKey` for `address`. */
export function writeKnownHosts(dir: string, address: string, publicKey: string): string {
  const path = join(dir, "known_hosts");
  writeFileSync(path, `${address} ${publicKey}\n`, { mode: 0o600 });
  return path;
}

function oneLine(publicKey: string): string {
  const [type, blob] = publicKey.trim().split(/\s+/);
  return `${type} ${blob}`;
}

/** Context shared by the create/delete helpers. */
export interface AccessContext {
  readonly ec2: EC2Client;
  readonly region: string;
  readonly runId: string;
  readonly tags: Readonly<Record<string, string>>;
  readonly signal?: AbortSignal | undefined;
}

/** ImportKeyPair with the run's tags; recorded in the ledger. Returns the key pair's name and id (tags are set by id). */
export async function importRunKeyPair(ctx: AccessContext, publicKey: string, name = `runctl-${ctx.runId}`): Promise<{ readonly name: string; readonly keyPairId: string | undefined }> {
  const out = await awsCall(
    "ImportKeyPair",
    (http) => ctx.ec2.send(new ImportKeyPairCommand({ KeyName: name, PublicKeyMaterial: new TextEncoder().encode(publicKey), TagSpecifications: [{ ResourceType: "key-pair", Tags: toAwsTags(ctx.tags) }] }), http), { signal: ctx.signal });
  recordResourceCreated({ kind: "key-pair", id: name, provider: "ec2", region: ctx.region, runId: ctx.runId, createdAt: new Date().toISOString(), ...expiry(ctx.tags), tags: ctx.tags });
  return { name, keyPairId: out.KeyPairId };
}

/** The VPC to create a security group in: the first subnet's, else the region's default VPC. */
export async function resolveVpc(ctx: AccessContext, subnetIds: readonly string[] | undefined): Promise<string> {
  if (subnetIds && subnetIds.length > 0) {
    const out = await awsCall("DescribeSubnets", (http) => ctx.ec2.send(new DescribeSubnetsCommand({ SubnetIds: [...subnetIds] }), http), { signal: ctx.signal });
    const vpcs = new Set((out.Subnets ?? []).map((s) => s.VpcId));
    if (vpcs.size !== 1) throw new RunctlError("INVALID_ARGUMENT", `ec2(): subnets ${subnetIds.join(", ")} must all be in one VPC.`);
    return [...vpcs][0]!;
  }
  const out = await awsCall("DescribeVpcs", (http) => ctx.ec2.send(new DescribeVpcsCommand({ Filters: [{ Name: "is-default", Values: ["true"] }] }), http), { signal: ctx.signal });
  const vpc = out.Vpcs?.[0]?.VpcId;
  if (!vpc) throw new RunctlError("INVALID_ARGUMENT", `ec2(): region ${ctx.region} has no default VPC; pass subnetIds.`);
  return vpc;
}

/**
 * CreateSecurityGroup (tagged) in `vpcId`; with `allowSshFrom`, port 22 is open to that CIDR only,
 * otherwise nothing comes in (SSM needs no inbound port).
 */
export async function createRunSecurityGroup(ctx: AccessContext, vpcId: string, allowSshFrom: string | undefined, betweenMembers = false): Promise<string> {
  const out = await awsCall(
    "CreateSecurityGroup",
    (http) =>
      ctx.ec2.send(
        new CreateSecurityGroupCommand({
          GroupName: `runctl-${ctx.runId}`,
          Description: `runctl run ${ctx.runId}${allowSshFrom ? `: SSH from ${allowSshFrom}` : ": no inbound"}`,
          VpcId: vpcId,
          TagSpecifications: [{ ResourceType: "security-group", Tags: toAwsTags(ctx.tags) }],
        }),
        http,
      ), { signal: ctx.signal });
  const groupId = out.GroupId;
  if (!groupId) throw new RunctlError("CLOUD_ERROR", "CreateSecurityGroup returned no group id.");
  recordResourceCreated({ kind: "security-group", id: groupId, provider: "ec2", region: ctx.region, runId: ctx.runId, createdAt: new Date().toISOString(), ...expiry(ctx.tags), tags: ctx.tags });
  // SSH from the client only; in a multi-node gang also every port between the group's own members
  // (rendezvous, gloo/NCCL), nothing else.
  const permissions: IpPermission[] = [
    ...(allowSshFrom ? [{ IpProtocol: "tcp", FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: allowSshFrom, Description: "runctl: SSH from the client" }] }] : []),
    ...(betweenMembers ? [{ IpProtocol: "-1", UserIdGroupPairs: [{ GroupId: groupId, Description: "runctl: between the nodes of a multi-node run" }] }] : []),
  ];
  if (permissions.length > 0) {
    await awsCall(
      "AuthorizeSecurityGroupIngress",
      (http) => ctx.ec2.send(new AuthorizeSecurityGroupIngressCommand({ GroupId: groupId, IpPermissions: permissions }), http),
      { signal: ctx.signal },
    );
  }
  return groupId;
}

/**
 * Deletes the run's security group. While the terminated instance's network interface lingers AWS
 * answers DependencyViolation, so this retries for up to `timeoutMs`.
 */
export async function deleteRunSecurityGroup(ec2: EC2Client, groupId: string, options: { readonly timeoutMs: number; readonly pollMs: number; readonly signal?: AbortSignal | undefined }): Promise<void> {
  await pollUntil(
    async (http) => {
      try {
        await ec2.send(new DeleteSecurityGroupCommand({ GroupId: groupId }), http);
        return true;
      } catch (err) {
        const code = awsErrorCode(err);
        if (code === "InvalidGroup.NotFound") return true;
        if (code === "DependencyViolation") return undefined;
        throw err;
      }
    }, { poll: { initialMs: options.pollMs }, timeoutMs: options.timeoutMs, signal: options.signal, onTimeout: () => new RunctlError("RESOURCE_IN_USE", `Security group ${groupId} is still in use after ${options.timeoutMs} ms; the sweeper removes it later (runctl sweep).`, { retryable: true }) });
  recordResourceDeleted("security-group", groupId);
}

/** Deletes the run's key pair (a missing one is fine). */
export async function deleteRunKeyPair(ec2: EC2Client, name: string, signal?: AbortSignal): Promise<void> {
  await awsCall("DeleteKeyPair", (http) => ec2.send(new DeleteKeyPairCommand({ KeyName: name }), http), { signal: signal }).catch((err: unknown) => {
    if (awsErrorCode((err as { cause?: unknown }).cause) !== "InvalidKeyPair.NotFound") throw err;
  });
  recordResourceDeleted("key-pair", name);
}

function expiry(tags: Readonly<Record<string, string>>): { expiresAt?: string | undefined } {
  const at = tags[TAG.expiresAt];
  return at ? { expiresAt: at } : {};
}

/** This machine's public address as a /32, from AWS's own echo service (only used with real AWS). */
export async function callerCidr(signal?: AbortSignal): Promise<string> {
  const res = await fetch("https://checkip.amazonaws.com", signal ? { signal } : {}).catch((err: unknown) => {
    throw new RunctlError("INVALID_ARGUMENT", "ec2(): could not learn this machine's public address for the SSH rule; pass access.allowSshFrom.", { cause: err });
  });
  const ip = (await res.text()).trim();
  if (!/^(\d{1,3}\.){3}\d{1,3}$/.test(ip)) throw new RunctlError("INVALID_ARGUMENT", "ec2(): checkip.amazonaws.com gave no IPv4 address; pass access.allowSshFrom.");
  return `${ip}/32`;
}

import { rmSync } from "node:fs";
import { CreateTagsCommand, EC2Client, type Instance } from "@aws-sdk/client-ec2";
import { SSMClient } from "@aws-sdk/client-ssm";
import { RunctlError, isRunctlError, throwIfAborted } from "../../errors/runctl-error.js";
import type { Storage } from "../../storage/types.js";
import { sshTransport } from "../../transport/ssh/ssh-transport.js";
import { ssmTransport } from "../../transport/ssm/index.js";
import { loggedTransport } from "../../transport/logged-transport.js";
import { sourceLogger } from "../../util/logger.js";
import type { Transport } from "../../transport/types.js";
import type { Machine, MachineRecord, MachineState, PlannedResource, Provider, ProviderEstimate, ProvisionRequest } from "../types.js";
import {
  callerCidr,
  createRunSecurityGroup,
  deleteRunKeyPair,
  deleteRunSecurityGroup,
  importRunKeyPair,
  makeRunKeys,
  resolveVpc,
  writeKnownHosts,
  type AccessContext,
} from "./access-resources.js";
import { validateEc2Options, type Ec2ProviderOptions } from "./ec2-options.js";
import { ec2DoctorChecks } from "./ec2-doctor.js";
import { AWS_SDK_MAX_ATTEMPTS, awsCall } from "../../aws/aws-call.js";
import { describeInstance, machineStateOf } from "./instance-state.js";
import { checkPrivateKeyFile } from "./local-key.js";
import { Ec2GangState } from "./gang-state.js";
import { launchInstance, terminateInstance, waitForTerminated, type Placement } from "./launch-instance.js";
import { describeInstanceType, resolveMachineImage } from "./machine-image.js";
import { pollUntil } from "../../aws/aws-poll.js";
import { estimateEc2Price, meteredEc2Price, plannedEc2Price } from "./ec2-price.js";
import { sweepEc2 } from "./sweep.js";
import { TAG, defaultOwner, runctlTags } from "./tags.js";
import { BOOT_POWER_OFF_CANCEL, buildUserData } from "./user-data.js";

const DAY_MS = 24 * 3600_000;
/**
 * Added to a run's time budget for its expiry: provisioning, setup, sync and data before the
 * budget's clock runs, the final commit and outputs after, and the agent's power-off backstop.
 */
export const EXPIRY_MARGIN_MS = 2 * 3600_000;
/** Added to `readyTimeoutMs` for the boot-time power-off: installing the agent and syncing before it starts. */
export const BOOT_POWER_OFF_MARGIN_MS = 30 * 60_000;
/** How often a followed run's expiry is renewed (at most a quarter of its lifetime). */
const KEEP_ALIVE_EVERY_MS = 10 * 60_000;

/** What runctl keeps about an instance it handed out (also in the journal record, for reattach). */
interface Ec2MachineFacts {
  readonly region: string;
  readonly access: "ssh" | "ssm";
  readonly market: "spot" | "on-demand" | "existing";
  readonly terminateOnRelease: boolean;
  readonly keyPairName?: string | undefined;
  readonly createdKeyPair: boolean;
  readonly securityGroupId?: string | undefined;
  readonly createdSecurityGroup: boolean;
  readonly keysDir?: string | undefined;
  /** The key pair's id (`key-…`): tags are set by id. */
  readonly keyPairId?: string | undefined;
  /** Volumes launched with the instance (its root volume). */
  readonly volumeIds?: readonly string[] | undefined;
  /** How long after the last renewal what runctl created for the run may be swept; absent for an existing instance. */
  readonly expiryTtlMs?: number | undefined;
  /** The instance was launched with a boot-time power-off the agent must cancel. */
  readonly bootPowerOff?: boolean | undefined;
}

/**
 * AWS EC2 instances, on-demand or spot, created for a run and terminated after it.
 *
 * - Every resource is tagged at creation (`runctl:run-id`, `runctl:owner`, `runctl:created-at`,
 *   `runctl:expires-at`, `Name`) and recorded in `$RUNCTL_HOME/resources.jsonl`; `Runctl.sweep`
 *   finds leftovers by those tags.
 * - Spot is one-time with terminate-on-interruption; zones are tried in order on capacity errors,
 *   then on-demand only when `spot.fallbackToOnDemand` allows it.
 * - Shutdown from inside the instance terminates it, so the agent's own limits end billing.
 * - Access over SSH (a key runctl makes, a security group open to you only, the host key pinned
 *   through cloud-init) or over SSM (no inbound port; files staged through S3).
 *
 * @example
 * ```ts
 * const run = Runctl.instance(ec2({ region: "us-east-1", instanceType: "g5.xlarge", spot: true, instanceProfile: "runctl-training" }))
 *   .sync("./")
 *   .checkpoints({ storage: s3("s3://my-bucket/ckpt") })
 *   .recover({ maxRestarts: 3 })
 *   .train("train.py");
 * ```
 */
export function ec2(options: Ec2ProviderOptions): Provider {
  validateEc2Options(options);
  const warn = options.onWarning ?? ((message: string) => process.emitWarning(message, "RunctlWarning"));
  let clients: { ec2: EC2Client; ssm: SSMClient } | undefined;
  const aws = (): { ec2: EC2Client; ssm: SSMClient } =>
    (clients ??= {
      ec2: options.clients?.ec2 ?? new EC2Client({ region: options.region, maxAttempts: AWS_SDK_MAX_ATTEMPTS }),
      ssm: options.clients?.ssm ?? new SSMClient({ region: options.region, maxAttempts: AWS_SDK_MAX_ATTEMPTS }),
    });
  const owner = options.owner ?? defaultOwner();
  const pollMs = options.pollMs ?? 2000;
  const access = options.access ?? { kind: "ssh" as const };
  const facts = new Map<string, Ec2MachineFacts>();
  /** What the machines of a multi-node gang share (its security group, node 0's placement). */
  const gangs = new Ec2GangState();
  const waitForMembers = async (groupId: string, signal?: AbortSignal): Promise<void> => {
    for (const id of gangs.takeMembers(groupId)) await waitForTerminated(aws().ec2, id, { timeoutMs: 300_000, pollMs, signal }).catch(() => {});
  };
  const spot = options.spot === undefined || options.spot === false ? null : options.spot === true ? { fallbackToOnDemand: false } : { fallbackToOnDemand: options.spot.fallbackToOnDemand ?? false, maxPriceUsd: options.spot.maxPriceUsd };
  const shutdownAfterRunMs = options.shutdownAfterRunMs ?? 30 * 60_000;
  const log = sourceLogger(options.logger, "provider");
  const unstartedPowerOffMs = options.unstartedPowerOffMs ?? (options.readyTimeoutMs ?? 600_000) + BOOT_POWER_OFF_MARGIN_MS;
  /** How long what a run creates lives past its last renewal: `ttlMs`, else the run's time budget plus a margin, else a day. */
  const expiryTtlMs = (request: Pick<ProvisionRequest, "maxDurationMs">): number => options.ttlMs ?? (request.maxDurationMs !== undefined ? request.maxDurationMs + EXPIRY_MARGIN_MS : DAY_MS);
  /** Reads every local file the provider was given (the SSH private key), before anything is created. */
  const checkLocalInputs = (): void => {
    if (access.kind === "ssh" && access.privateKeyPath !== undefined) checkPrivateKeyFile(access.privateKeyPath);
  };

  const transportOf = (instanceId: string, address: string, record: { username: string; privateKeyPath?: string | undefined; knownHostsPath?: string | undefined }, runId: string | undefined): Transport => {
    if (access.kind === "ssm") {
      const ssm = ssmTransport({ instanceId, region: options.region, client: aws().ssm, staging: access.staging, user: access.user === undefined ? "ubuntu" : access.user, ...(runId ? { runId } : {}) });
      return loggedTransport(ssm, sourceLogger(options.logger, "transport"));
    }
    return sshTransport({
      host: address,
      username: record.username,
      ...(record.privateKeyPath ? { privateKeyPath: record.privateKeyPath } : {}),
      ...(record.knownHostsPath ? { knownHostsPath: record.knownHostsPath } : {}),
      // runctl made this instance, its key and its address: a user's `Host *` lines are not for it.
      sshConfig: false,
      onWarning: warn,
      logger: options.logger,
    });
  };

  /**
   * Waits until a command really runs on the instance (not merely "accepted"); MACHINE_NOT_READY on
   * timeout, its message ending with `aftermath` (what becomes of the instance). A refused key
   * (AUTH_FAILED), a wrong host key or a bad setting is final at once: waiting cannot fix it.
   */
  const waitReady = async (transport: Transport, instanceId: string, signal: AbortSignal | undefined, aftermath: string): Promise<string> => {
    const timeoutMs = options.readyTimeoutMs ?? 600_000;
    let lastError = "no answer yet";
    const python = options.python ?? "python3";
    return pollUntil(
      async () => {
        try {
          const r = await transport.exec({ script: `printf '%s\\n' "$HOME"; ${python} -c 'import sys; assert sys.version_info >= (3, 8)'` }, signal ? { signal } : {});
          const home = r.stdout.trim().split("\n")[0] ?? "";
          if (r.exitCode === 0 && home.startsWith("/")) return home;
          lastError = `exit ${r.exitCode}: ${r.stderrTail.trim() || "Python 3.8+ missing?"}`;
          return undefined;
        } catch (err) {
          if (isRunctlError(err) && err.code === "ABORTED") throw err;
          if (isRunctlError(err) && (err.code === "HOST_KEY_MISMATCH" || err.code === "AUTH_FAILED" || err.code === "INVALID_ARGUMENT")) {
            throw new RunctlError(err.code, `${err.message} (instance ${instanceId}; ${aftermath})`, { cause: err, details: { ...err.details, instanceId } });
          }
          lastError = (err as Error).message;
          return undefined;
        }
      }, { poll: { initialMs: pollMs, maxMs: 10_000 }, timeoutMs, signal, onTimeout: () => new RunctlError("MACHINE_NOT_READY", `Instance ${instanceId} is running but did not answer over ${access.kind.toUpperCase()} within ${timeoutMs} ms (last: ${lastError}); ${aftermath}.`, { retryable: true, details: { instanceId } }) });
  };

  /** Undoes what a failed provision made: instance, security group, key pair, local keys. */
  const cleanup = async (made: { instanceIds: string[]; securityGroupId?: string | undefined; keyPairName?: string | undefined; keysDir?: string | undefined }): Promise<void> => {
    const { ec2: client } = aws();
    for (const instanceId of made.instanceIds) {
      await terminateInstance(client, instanceId, { timeoutMs: 120_000, pollMs }).catch((err: unknown) => warn(`runctl: could not terminate ${instanceId}: ${(err as Error).message}; run \`runctl sweep\`.`));
      // The group cannot be deleted while any of its instances' network interfaces exists.
      if (made.securityGroupId) await waitForTerminated(client, instanceId, { timeoutMs: 300_000, pollMs }).catch(() => {});
    }
    if (made.securityGroupId) {
      await waitForMembers(made.securityGroupId);
      await deleteRunSecurityGroup(client, made.securityGroupId, { timeoutMs: 180_000, pollMs }).catch((err: unknown) => warn(`runctl: ${(err as Error).message}`));
    }
    if (made.keyPairName) await deleteRunKeyPair(client, made.keyPairName).catch((err: unknown) => warn(`runctl: could not delete key pair ${made.keyPairName}: ${(err as Error).message}`));
    if (made.keysDir) rmSync(made.keysDir, { recursive: true, force: true });
  };

  const priceOptions = { region: options.region, instanceType: options.instanceType, instanceId: options.instanceId, availabilityZones: options.availabilityZones, hourlyPriceUsd: options.hourlyPriceUsd, spot: spot !== null };
  const hourlyFor = (instance: Instance, market: "spot" | "on-demand" | "existing", signal: AbortSignal | undefined): Promise<number> =>
    meteredEc2Price(options, () => aws().ec2, instance.InstanceType ?? options.instanceType ?? "", market, instance.Placement?.AvailabilityZone, signal, warn);

  const machineOf = (instance: Instance, address: string, transport: Transport, home: string, runFacts: Ec2MachineFacts, keys: { username: string; privateKeyPath?: string | undefined; knownHostsPath?: string | undefined }, hourly: number, tags: Readonly<Record<string, string>>): Machine => {
    const instanceId = instance.InstanceId!;
    const rootDir = `${home}/.runctl`;
    const launchedAtMs = instance.LaunchTime?.getTime() ?? Date.now();
    const record: MachineRecord = {
      provider: "ec2",
      id: instanceId,
      address,
      rootDir,
      python: options.python ?? "python3",
      launchedAtMs,
      hourlyPriceUsd: hourly,
      username: keys.username,
      ...(keys.privateKeyPath ? { privateKeyPath: keys.privateKeyPath } : {}),
      ...(keys.knownHostsPath ? { knownHostsPath: keys.knownHostsPath } : {}),
      ...runFacts,
    };
    facts.set(instanceId, runFacts);
    return {
      id: instanceId,
      provider: "ec2",
      address,
      privateAddress: instance.PrivateIpAddress,
      transport,
      rootDir,
      python: options.python ?? "python3",
      sharesLocalFilesystem: false,
      tags,
      hourlyPriceUsd: hourly,
      record,
      launchedAtMs,
      imds: { endpoint: options.imdsEndpoint ?? "http://169.254.169.254" },
      ...(runFacts.terminateOnRelease
        ? { shutdown: { command: ["sudo", "-n", "shutdown", "-h", "now"], afterRunMs: shutdownAfterRunMs, ...(runFacts.bootPowerOff ? { cancelBootPowerOff: BOOT_POWER_OFF_CANCEL } : {}) } }
        : {}),
    };
  };

  const addressOf = (instance: Instance): string => {
    if (access.kind === "ssm") return instance.PrivateIpAddress ?? instance.InstanceId ?? "";
    const address = access.usePrivateIp ? instance.PrivateIpAddress : instance.PublicIpAddress;
    if (!address) {
      throw new RunctlError("PROVISION_FAILED", `Instance ${instance.InstanceId} has no ${access.usePrivateIp ? "private" : "public"} IP address; use a subnet that assigns public addresses, access: { kind: "ssh", usePrivateIp: true } from inside the VPC, or SSM access.`);
    }
    return address;
  };

  /** Uses an existing instance (ec2({ instanceId })). */
  const provisionExisting = async (instanceId: string, runId: string, signal: AbortSignal | undefined): Promise<Machine> => {
    checkLocalInputs();
    const instance = await describeInstance(aws().ec2, instanceId, signal);
    if (!instance || instance.State?.Name !== "running") {
      throw new RunctlError("PROVISION_FAILED", `Instance ${instanceId} is ${instance?.State?.Name ?? "not found"} in ${options.region}; it must be running.`);
    }
    const address = addressOf(instance);
    const keys = { username: access.kind === "ssh" ? (access.username ?? "ubuntu") : (access.user === undefined ? "ubuntu" : (access.user ?? "root")), ...(access.kind === "ssh" && access.privateKeyPath ? { privateKeyPath: access.privateKeyPath } : {}) };
    const transport = transportOf(instanceId, address, keys, runId);
    const terminates = options.terminateOnRelease ?? false;
    try {
      const home = await waitReady(transport, instanceId, signal, `it was left ${instance.State?.Name ?? "running"}: runctl did not launch it`);
      const runFacts: Ec2MachineFacts = { region: options.region, access: access.kind, market: "existing", terminateOnRelease: terminates, createdKeyPair: false, createdSecurityGroup: false };
      return machineOf(instance, address, transport, home, runFacts, keys, await hourlyFor(instance, instance.InstanceLifecycle === "spot" ? "spot" : "on-demand", signal), {});
    } catch (err) {
      await transport.close().catch(() => {});
      throw err;
    }
  };

  const provisionNew = async (request: ProvisionRequest, signal: AbortSignal | undefined): Promise<Machine> => {
    const { runId } = request;
    const instanceType = options.instanceType!;
    // Every local input first: nothing is created (or billed) for a key that cannot be used.
    checkLocalInputs();
    const client = aws();
    const ttlMs = expiryTtlMs(request);
    const tags = runctlTags({ runId, owner, now: new Date(), ttlMs, name: `runctl-${runId}`, extra: options.tags });
    const ctx: AccessContext = { ec2: client.ec2, region: options.region, runId, tags, signal };
    // Reads first: a bad type or AMI fails before anything is created.
    const typeFacts = await describeInstanceType(client.ec2, instanceType, signal);
    const image = await resolveMachineImage(client, typeFacts, options.ami, signal);
    const terminateOnRelease = options.terminateOnRelease ?? true;
    // Only an instance runctl terminates anyway powers itself off: one kept after the run must not die before it.
    const powerOffAfterMin = terminateOnRelease && unstartedPowerOffMs > 0 ? Math.max(1, Math.ceil(unstartedPowerOffMs / 60_000)) : undefined;
    const allowSshFrom = access.kind === "ssh" && !options.securityGroupIds ? (access.allowSshFrom ?? (await callerCidr(signal))) : undefined;
    throwIfAborted(signal);

    const made: { instanceIds: string[]; securityGroupId?: string | undefined; keyPairName?: string | undefined; keyPairId?: string | undefined; keysDir?: string | undefined } = { instanceIds: [] };
    try {
      const keys = makeRunKeys(runId);
      made.keysDir = keys.dir;
      let keyPairName: string | undefined;
      let privateKeyPath: string | undefined;
      if (access.kind === "ssh") {
        if (access.keyPairName) keyPairName = access.keyPairName;
        else {
          // Key pair names are unique in a region: each node of a gang imports its own.
          const imported = await importRunKeyPair(ctx, keys.login.publicKey, request.gang && request.gang.size > 1 ? `runctl-${runId}-node${request.gang.rank}` : `runctl-${runId}`);
          keyPairName = made.keyPairName = imported.name;
          made.keyPairId = imported.keyPairId;
        }
        privateKeyPath = access.privateKeyPath ?? keys.login.privateKeyPath;
      }
      let sharedGroup: string | undefined;
      if (!options.securityGroupIds && request.gang && request.gang.size > 1) {
        sharedGroup = await gangs.sharedGroup(runId, async () => (made.securityGroupId = await createRunSecurityGroup(ctx, await resolveVpc(ctx, options.subnetIds), allowSshFrom, true)));
      }
      const securityGroupIds = options.securityGroupIds ?? [sharedGroup ?? (made.securityGroupId = await createRunSecurityGroup(ctx, await resolveVpc(ctx, options.subnetIds), allowSshFrom))];
      let placements: Placement[] = options.subnetIds?.map((subnetId) => ({ subnetId })) ?? options.availabilityZones?.map((availabilityZone) => ({ availabilityZone })) ?? [];
      // A gang lives in one placement: node 0 finds it (capacity permitting), the others follow it.
      const gang = request.gang && request.gang.size > 1 ? request.gang : undefined;
      if (gang && gang.rank > 0) placements = [await gangs.placement(runId)];
      const gpu = typeFacts.gpus > 0;
      log.info(`ec2 ${options.region}: launching ${instanceType}${spot ? " spot" : ""} for run ${runId}`, { image, placements: placements.length });
      const launched = await launchInstance({
        ec2: client.ec2,
        region: options.region,
        runId,
        launchSeq: gangs.nextLaunch(runId),
        instanceType,
        image,
        rootVolume: {
          sizeGb: options.rootVolume?.sizeGb ?? (gpu ? 100 : 30),
          type: options.rootVolume?.type ?? "gp3",
          iops: options.rootVolume?.iops,
          encrypted: options.rootVolume?.encrypted ?? true,
        },
        keyName: keyPairName,
        securityGroupIds,
        instanceProfile: options.instanceProfile,
        userData: buildUserData({ ...(access.kind === "ssh" ? { hostKey: keys.host } : {}), powerOffAfterMin }),
        tags,
        spot,
        placements,
        runningTimeoutMs: options.runningTimeoutMs ?? 600_000,
        pollMs,
        signal,
        onInstance: (id) => {
          made.instanceIds.push(id);
          const group = sharedGroup ?? made.securityGroupId;
          if (group && gang) gangs.joined(group, id);
        },
      });
      const instance = launched.instance;
      const instanceId = instance.InstanceId!;
      if (gang && gang.rank === 0) {
        gangs.placed(runId, options.subnetIds && instance.SubnetId ? { subnetId: instance.SubnetId } : instance.Placement?.AvailabilityZone ? { availabilityZone: instance.Placement.AvailabilityZone } : {});
      }
      if (launched.fellBackToOnDemand) {
        warn(`runctl: no spot capacity for ${instanceType} (${launched.attempts.map((a) => `${a.placement}: ${a.code}`).join("; ")}); launched ${instanceId} on-demand as allowed by spot.fallbackToOnDemand.`);
      }
      const address = addressOf(instance);
      log.info(`ec2 ${options.region}: ${instanceId} running at ${address}`, { attempts: launched.attempts.length, onDemandFallback: launched.fellBackToOnDemand });
      const username = access.kind === "ssh" ? (access.username ?? "ubuntu") : (access.user === undefined ? "ubuntu" : (access.user ?? "root"));
      const knownHostsPath = access.kind === "ssh" ? writeKnownHosts(keys.dir, address, keys.host.publicKey) : undefined;
      const keyInfo = { username, privateKeyPath, knownHostsPath };
      const transport = transportOf(instanceId, address, keyInfo, runId);
      let home: string;
      try {
        home = await waitReady(transport, instanceId, signal, "it was terminated");
      } catch (err) {
        await transport.close().catch(() => {});
        throw err;
      }
      const runFacts: Ec2MachineFacts = {
        region: options.region,
        access: access.kind,
        market: launched.market,
        terminateOnRelease,
        keyPairName,
        keyPairId: made.keyPairId,
        volumeIds: (instance.BlockDeviceMappings ?? []).flatMap((b) => (b.Ebs?.VolumeId ? [b.Ebs.VolumeId] : [])),
        expiryTtlMs: ttlMs,
        bootPowerOff: powerOffAfterMin !== undefined,
        createdKeyPair: made.keyPairName !== undefined,
        securityGroupId: made.securityGroupId ?? sharedGroup,
        // The node that made a gang's shared group deletes it (retrying while the others' interfaces linger).
        createdSecurityGroup: made.securityGroupId !== undefined,
        keysDir: keys.dir,
      };
      return machineOf(instance, address, transport, home, runFacts, keyInfo, await hourlyFor(instance, launched.market, signal), tags);
    } catch (err) {
      if (made.securityGroupId) gangs.forgetGroup(made.securityGroupId);
      await cleanup(made);
      throw err;
    }
  };

  const factsOf = (machine: Pick<Machine, "id" | "record">): Ec2MachineFacts => {
    const known = facts.get(machine.id);
    if (known) return known;
    const r = machine.record;
    return {
      region: String(r["region"] ?? options.region),
      access: r["access"] === "ssm" ? "ssm" : "ssh",
      market: r["market"] === "spot" ? "spot" : r["market"] === "existing" ? "existing" : "on-demand",
      terminateOnRelease: r["terminateOnRelease"] === true,
      keyPairName: typeof r["keyPairName"] === "string" ? r["keyPairName"] : undefined,
      createdKeyPair: r["createdKeyPair"] === true,
      securityGroupId: typeof r["securityGroupId"] === "string" ? r["securityGroupId"] : undefined,
      createdSecurityGroup: r["createdSecurityGroup"] === true,
      keysDir: typeof r["keysDir"] === "string" ? r["keysDir"] : undefined,
      keyPairId: typeof r["keyPairId"] === "string" ? r["keyPairId"] : undefined,
      volumeIds: Array.isArray(r["volumeIds"]) ? r["volumeIds"].filter((v): v is string => typeof v === "string") : undefined,
      expiryTtlMs: typeof r["expiryTtlMs"] === "number" ? r["expiryTtlMs"] : undefined,
      bootPowerOff: r["bootPowerOff"] === true,
    };
  };

  return {
    name: "ec2",
    ...(options.logger !== undefined ? { logger: options.logger } : {}),
    sharesLocalFilesystem: false,
    // The instance does not exist before a run: the account is checked, no machine (decision 0025).
    doctor: async (opts) => ({ checks: await ec2DoctorChecks(aws(), options, opts?.signal), machines: [] }),
    // SSM stages stdin in S3: no client credentials may travel there (the instance profile is used).
    stdinLeavesCopy: access.kind === "ssm",
    async provision(request, opts) {
      const signal = opts?.signal;
      if (options.instanceId) return provisionExisting(options.instanceId, request.runId, signal);
      if (!(request.gang && request.gang.rank === 0 && request.gang.size > 1)) return provisionNew(request, signal);
      try {
        return await provisionNew(request, signal);
      } catch (err) {
        gangs.placementFailed(request.runId, err); // the gang cannot be completed: the other nodes stop waiting
        throw err;
      }
    },
    async release(machine, opts) {
      await machine.transport.close().catch(() => {});
      const f = factsOf(machine);
      facts.delete(machine.id);
      if (!f.terminateOnRelease) return log.info(`ec2 ${options.region}: ${machine.id} released, kept running (terminateOnRelease: false)`);
      const { ec2: client } = aws();
      await terminateInstance(client, machine.id, { timeoutMs: 180_000, pollMs, signal: opts?.signal });
      log.info(`ec2 ${options.region}: ${machine.id} terminated`);
      // The security group cannot go while the instance's network interface exists.
      if (f.createdSecurityGroup && f.securityGroupId) {
        gangs.forgetGroup(f.securityGroupId);
        await waitForTerminated(client, machine.id, { timeoutMs: 300_000, pollMs, signal: opts?.signal }).catch(() => {});
        await waitForMembers(f.securityGroupId, opts?.signal);
        await deleteRunSecurityGroup(client, f.securityGroupId, { timeoutMs: 180_000, pollMs, signal: opts?.signal }).catch((err: unknown) => warn(`runctl: ${(err as Error).message}`));
      }
      if (f.createdKeyPair && f.keyPairName) await deleteRunKeyPair(client, f.keyPairName, opts?.signal).catch((err: unknown) => warn(`runctl: could not delete key pair ${f.keyPairName}: ${(err as Error).message}`));
      if (f.keysDir) rmSync(f.keysDir, { recursive: true, force: true });
    },
    async describe(machine, opts): Promise<MachineState> {
      return machineStateOf(await describeInstance(aws().ec2, machine.id, opts?.signal));
    },
    async reattach(record, opts) {
      const instance = await describeInstance(aws().ec2, record.id, opts?.signal);
      if (!instance || instance.State?.Name !== "running") throw new RunctlError("HOST_UNREACHABLE", `Instance ${record.id} is ${instance?.State?.Name ?? "gone"}.`);
      const str = (k: string): string | undefined => (typeof record[k] === "string" ? (record[k] as string) : undefined);
      const keys = { username: str("username") ?? "ubuntu", privateKeyPath: str("privateKeyPath"), knownHostsPath: str("knownHostsPath") };
      const address = str("address") ?? addressOf(instance);
      const transport = transportOf(record.id, address, keys, undefined);
      const home = await waitReady(transport, record.id, opts?.signal, "it was left as it is");
      const f = factsOf({ id: record.id, record });
      return machineOf(instance, address, transport, home, f, keys, typeof record["hourlyPriceUsd"] === "number" ? record["hourlyPriceUsd"] : await hourlyFor(instance, f.market, opts?.signal), {});
    },
    plan() {
      const tags = runctlTags({ runId: "<run-id>", owner, now: new Date(), ttlMs: expiryTtlMs({}), name: "runctl-<run-id>", extra: options.tags });
      const resources: PlannedResource[] = [];
      if (options.instanceId) {
        resources.push({ kind: "instance", description: `use existing instance ${options.instanceId} (not created${options.terminateOnRelease ? "; terminated at release" : ""})`, tags: {} });
      } else {
        const market = spot ? `spot${spot.fallbackToOnDemand ? " (on-demand if no capacity)" : ""}` : "on-demand";
        resources.push({ kind: "instance", description: `${options.instanceType} ${market} in ${options.region}, AMI ${options.ami ?? "resolved at launch from AWS's public SSM parameter"}, shutdown = terminate`, tags });
        resources.push({ kind: "volume", description: `root volume ${options.rootVolume?.sizeGb ?? "30/100"} GB ${options.rootVolume?.type ?? "gp3"}, deleted with the instance`, tags });
        if (access.kind === "ssh" && !access.keyPairName) resources.push({ kind: "key-pair", description: "runctl-<run-id> (ed25519, made locally, imported)", tags });
        if (!options.securityGroupIds) resources.push({ kind: "security-group", description: access.kind === "ssh" ? `runctl-<run-id>: TCP 22 from ${access.allowSshFrom ?? "your public address"} only` : "runctl-<run-id>: no inbound rules", tags });
      }
      return { resources, hourlyPriceUsd: plannedEc2Price(priceOptions) };
    },
    estimate(opts): Promise<ProviderEstimate> {
      return estimateEc2Price(priceOptions, () => aws().ec2, opts?.signal);
    },
    keepAliveEveryMs: Math.max(1000, Math.min(KEEP_ALIVE_EVERY_MS, Math.floor((options.ttlMs ?? DAY_MS) / 4))),
    async keepAlive(machine, opts) {
      const f = factsOf(machine);
      // An existing instance carries no runctl expiry; nothing to renew.
      if (f.expiryTtlMs === undefined || f.market === "existing") return;
      const resources = [machine.id, ...(f.volumeIds ?? []), ...(f.createdSecurityGroup && f.securityGroupId ? [f.securityGroupId] : []), ...(f.createdKeyPair && f.keyPairId ? [f.keyPairId] : [])];
      const expiresAt = new Date(Date.now() + f.expiryTtlMs).toISOString();
      await awsCall("CreateTags", (http) => aws().ec2.send(new CreateTagsCommand({ Resources: resources, Tags: [{ Key: TAG.expiresAt, Value: expiresAt }] }), http), { signal: opts?.signal });
    },
    async sweep(opts) {
      const staging: Storage[] = access.kind === "ssm" ? [access.staging] : [];
      // The provider's own owner (ec2({ owner })) unless the sweep names one.
      return sweepEc2({
        region: options.region,
        client: aws().ec2,
        staging,
        owner: opts.owner ?? owner,
        dryRun: opts.dryRun,
        force: opts.force,
        signal: opts.signal,
      });
    },
  };
}


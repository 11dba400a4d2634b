/**
 * A fake EC2 control plane for tests: aws-sdk-client-mock on one EC2Client (and one SSMClient for
 * AMI parameters), keeping instances, key pairs and security groups as state, answering with AWS's
 * real response shapes and error codes. The only mocked boundary in runctl's tests.
 *
 * `boot` decides what a launched instance is: by default an address nobody listens on; the E2E
 * tests boot a testbed host (its sshd takes the host key from the user data, its user the key pair).
 */
import { randomBytes } from "node:crypto";
import {
  AuthorizeSecurityGroupIngressCommand,
  CreateSecurityGroupCommand,
  CreateTagsCommand,
  DeleteKeyPairCommand,
  DeleteSecurityGroupCommand,
  DescribeImagesCommand,
  DescribeInstancesCommand,
  DescribeInstanceTypesCommand,
  DescribeKeyPairsCommand,
  DescribeSecurityGroupsCommand,
  DescribeSnapshotsCommand,
  DescribeVolumesCommand,
  DescribeSpotPriceHistoryCommand,
  DescribeSubnetsCommand,
  DescribeVpcsCommand,
  EC2Client,
  EC2ServiceException,
  ImportKeyPairCommand,
  RunInstancesCommand,
  TerminateInstancesCommand,
  type Instance,
  type RunInstancesCommandInput,
  type Tag,
} from "@aws-sdk/client-ec2";
import { GetParameterCommand, ParameterNotFound, SSMClient } from "@aws-sdk/client-ssm";
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the stub of one client, whatever its command types
import { mockClient, type AwsStub } from "aws-sdk-client-mock";

/** An EC2 error as the SDK raises it: `name` is AWS's code, `$metadata.httpStatusCode` its status. */
export function ec2Error(code: string, message: string, httpStatusCode = 400): EC2ServiceException {
  return new EC2ServiceException({ name: code, $fault: httpStatusCode >= 500 ? "server" : "client", $metadata: { httpStatusCode, requestId: randomBytes(8).toString("hex") }, message });
}

/** AWS's own message for an exhausted zone, so tests see what users see. */
export const capacityError = (type: string, zone: string): EC2ServiceException =>
  ec2Error("InsufficientInstanceCapacity", `We currently do not have sufficient ${type} capacity in the Availability Zone you requested (${zone}). Our system will be working on provisioning additional capacity.`, 500);

/** What a fake instance turns out to be when launched. */
export interface BootedInstance {
  readonly publicIp: string;
  readonly privateIp?: string;
}

/** Settings of {@link fakeEc2}. */
export interface FakeEc2Options {
  readonly region?: string;
  /** Instance types the region knows, with GPUs and architecture. */
  readonly instanceTypes?: Readonly<Record<string, { readonly gpus: number; readonly arch?: "x86_64" | "arm64" }>>;
  /** Called on every accepted RunInstances; throw an EC2 error to refuse it (capacity). */
  readonly onRunInstances?: (input: RunInstancesCommandInput, attempt: number) => void;
  /** Makes the instance reachable; called once it turns running. */
  readonly boot?: (instance: { readonly id: string; readonly input: RunInstancesCommandInput; readonly publicKey: string | undefined }) => Promise<BootedInstance> | BootedInstance;
  /** DescribeInstances calls an instance stays pending. @defaultValue 1 */
  readonly pendingPolls?: number;
  /** Never leave pending (an instance that never reaches running). */
  readonly stuckPending?: boolean;
  /** Instead of running, the instance ends with this state reason (e.g. `Server.InsufficientInstanceCapacity`). */
  readonly endBeforeRunning?: (attempt: number) => string | undefined;
  /** DescribeInstances calls a terminating instance stays shutting-down. @defaultValue 1 */
  readonly shuttingDownPolls?: number;
  /** DeleteSecurityGroup answers DependencyViolation this many times first. @defaultValue 1 */
  readonly dependencyViolations?: number;
  /** Spot prices per zone. */
  readonly spotPrices?: Readonly<Record<string, number>>;
  /** Ids for launched instances, in order (then random ones). */
  readonly instanceIds?: readonly string[];
  /** Throttle (RequestLimitExceeded) the first N calls of these commands. */
  readonly throttle?: Readonly<Record<string, number>>;
}

interface FakeInstance {
  id: string;
  input: RunInstancesCommandInput;
  state: "pending" | "running" | "shutting-down" | "terminated";
  polls: number;
  reason?: { Code: string; Message: string };
  address?: BootedInstance;
  launchTime: Date;
  zone: string;
  spot: boolean;
  booting?: Promise<void>;
}

/** The fake account: its clients, its state and every call made. */
export interface FakeEc2 {
  readonly ec2: EC2Client;
  readonly ssm: SSMClient;
  readonly ec2Mock: AwsStub<any, any, any>;
  readonly instances: Map<string, FakeInstance>;
  readonly keyPairs: Map<string, { publicKey: string; tags: Tag[]; keyPairId: string }>;
  readonly securityGroups: Map<string, { name: string; tags: Tag[]; ingress: unknown[] }>;
  /** Names of the EC2 commands called, in order. */
  calls(): string[];
  /** Inputs of every call of one command. */
  inputsOf<T = Record<string, unknown>>(command: string): T[];
  /** Makes a running spot instance reclaimed by AWS (state reason Server.SpotInstanceTermination). */
  reclaim(instanceId: string): void;
}

const AMI_GPU = "ami-0a1b2c3d4e5f60718";
const AMI_CPU = "ami-0f0e0d0c0b0a09080";

/** A fake EC2 account in one region. */
export function fakeEc2(options: FakeEc2Options = {}): FakeEc2 {
  const region = options.region ?? "us-east-1";
  const credentials = { accessKeyId: "FAKE", secretAccessKey: "FAKE" };
  const ec2 = new EC2Client({ region, credentials, maxAttempts: 1 });
  const ssm = new SSMClient({ region, credentials, maxAttempts: 1 });
  const ec2Mock = mockClient(ec2);
  const ssmMock = mockClient(ssm);
  const types = options.instanceTypes ?? { "t3.micro": { gpus: 0 }, "g5.xlarge": { gpus: 1 } };
  const instances = new Map<string, FakeInstance>();
  const keyPairs = new Map<string, { publicKey: string; tags: Tag[]; keyPairId: string }>();
  const securityGroups = new Map<string, { name: string; tags: Tag[]; ingress: unknown[] }>();
  const log: { name: string; input: unknown }[] = [];
  const throttled = new Map<string, number>();
  let attempts = 0;
  const presetIds = [...(options.instanceIds ?? [])];

  const record = (name: string, input: unknown): void => {
    log.push({ name, input });
    const limit = options.throttle?.[name] ?? 0;
    const seen = (throttled.get(name) ?? 0) + 1;
    throttled.set(name, seen);
    if (seen <= limit) throw ec2Error("RequestLimitExceeded", "Request limit exceeded.", 503);
  };
  const id = (prefix: string): string => `${prefix}-${randomBytes(9).toString("hex").slice(0, 17)}`;
  const tagsFor = (input: RunInstancesCommandInput, type: string): Tag[] => input.TagSpecifications?.find((t) => t.ResourceType === type)?.Tags ?? [];

  const view = (i: FakeInstance): Instance => ({
    InstanceId: i.id,
    InstanceType: i.input.InstanceType,
    ImageId: i.input.ImageId,
    State: { Name: i.state, Code: { pending: 0, running: 16, "shutting-down": 32, terminated: 48 }[i.state] },
    ...(i.reason ? { StateReason: i.reason, StateTransitionReason: i.reason.Message } : {}),
    LaunchTime: i.launchTime,
    Placement: { AvailabilityZone: i.zone, Tenancy: "default" },
    ...(i.spot ? { InstanceLifecycle: "spot", SpotInstanceRequestId: `sir-${i.id.slice(2, 10)}` } : {}),
    ...(i.state === "running" && i.address ? { PublicIpAddress: i.address.publicIp, PrivateIpAddress: i.address.privateIp ?? "172.31.5.10" } : { PrivateIpAddress: "172.31.5.10" }),
    Tags: tagsFor(i.input, "instance"),
    BlockDeviceMappings: [{ DeviceName: "/dev/sda1", Ebs: { VolumeId: `vol-${i.id.slice(2)}`, Status: "attached", DeleteOnTermination: true } }],
    ...(i.input.KeyName ? { KeyName: i.input.KeyName } : {}),
    SecurityGroups: (i.input.SecurityGroupIds ?? []).map((g) => ({ GroupId: g, GroupName: securityGroups.get(g)?.name ?? g })),
  });

  ec2Mock.on(DescribeInstanceTypesCommand).callsFake((input: { InstanceTypes?: string[] }) => {
    record("DescribeInstanceTypes", input);
    const name = input.InstanceTypes?.[0] ?? "";
    const t = types[name];
    if (!t) throw ec2Error("InvalidInstanceType", `The following supplied instance types do not exist: [${name}]`);
    return {
      InstanceTypes: [
        { InstanceType: name, ProcessorInfo: { SupportedArchitectures: [t.arch ?? "x86_64"] }, VCpuInfo: { DefaultVCpus: 2 }, ...(t.gpus > 0 ? { GpuInfo: { Gpus: [{ Name: "A10G", Manufacturer: "NVIDIA", Count: t.gpus }] } } : {}) },
      ],
    };
  });
  ssmMock.on(GetParameterCommand).callsFake((input: { Name: string }) => {
    log.push({ name: "ssm:GetParameter", input });
    const value = input.Name.includes("deeplearning") ? AMI_GPU : input.Name.includes("canonical") ? AMI_CPU : undefined;
    if (!value) throw new ParameterNotFound({ $metadata: { httpStatusCode: 400 }, message: "" });
    return { Parameter: { Name: input.Name, Type: "String", Value: value, Version: 42, DataType: "aws:ec2:image" } };
  });
  ec2Mock.on(DescribeImagesCommand).callsFake((input: { ImageIds?: string[] }) => {
    record("DescribeImages", input);
    const imageId = input.ImageIds?.[0] ?? "";
    if (imageId !== AMI_GPU && imageId !== AMI_CPU && !imageId.startsWith("ami-0")) throw ec2Error("InvalidAMIID.NotFound", `The image id '[${imageId}]' does not exist`);
    if (imageId === "ami-00000000000000000") return { Images: [] };
    return { Images: [{ ImageId: imageId, Architecture: "x86_64", RootDeviceName: "/dev/sda1", State: "available", Name: "fake image" }] };
  });
  ec2Mock.on(DescribeVpcsCommand).callsFake((input: unknown) => {
    record("DescribeVpcs", input);
    return { Vpcs: [{ VpcId: "vpc-0123456789abcdef0", IsDefault: true, CidrBlock: "172.31.0.0/16" }] };
  });
  ec2Mock.on(DescribeSubnetsCommand).callsFake((input: { SubnetIds?: string[] }) => {
    record("DescribeSubnets", input);
    return { Subnets: (input.SubnetIds ?? []).map((s, n) => ({ SubnetId: s, VpcId: "vpc-0123456789abcdef0", AvailabilityZone: `${region}${"abcdef"[n]}` })) };
  });
  ec2Mock.on(ImportKeyPairCommand).callsFake((input: { KeyName: string; PublicKeyMaterial: Uint8Array; TagSpecifications?: { Tags?: Tag[] }[] }) => {
    record("ImportKeyPair", input);
    if (keyPairs.has(input.KeyName)) throw ec2Error("InvalidKeyPair.Duplicate", `The keypair already exists`);
    const keyPairId = id("key");
    keyPairs.set(input.KeyName, { publicKey: Buffer.from(input.PublicKeyMaterial).toString("utf8"), tags: input.TagSpecifications?.[0]?.Tags ?? [], keyPairId });
    return { KeyName: input.KeyName, KeyPairId: keyPairId, KeyFingerprint: "SHA256:fake" };
  });
  ec2Mock.on(CreateSecurityGroupCommand).callsFake((input: { GroupName: string; TagSpecifications?: { Tags?: Tag[] }[] }) => {
    record("CreateSecurityGroup", input);
    const groupId = id("sg");
    securityGroups.set(groupId, { name: input.GroupName, tags: input.TagSpecifications?.[0]?.Tags ?? [], ingress: [] });
    return { GroupId: groupId };
  });
  ec2Mock.on(AuthorizeSecurityGroupIngressCommand).callsFake((input: { GroupId: string; IpPermissions: unknown[] }) => {
    record("AuthorizeSecurityGroupIngress", input);
    securityGroups.get(input.GroupId)?.ingress.push(...input.IpPermissions);
    return { Return: true };
  });
  let violations = options.dependencyViolations ?? 1;
  ec2Mock.on(DeleteSecurityGroupCommand).callsFake((input: { GroupId: string }) => {
    record("DeleteSecurityGroup", input);
    if (!securityGroups.has(input.GroupId)) throw ec2Error("InvalidGroup.NotFound", `The security group '${input.GroupId}' does not exist`);
    const inUse = [...instances.values()].some((i) => i.state !== "terminated" && i.input.SecurityGroupIds?.includes(input.GroupId));
    if (inUse || violations-- > 0) throw ec2Error("DependencyViolation", `resource ${input.GroupId} has a dependent object`);
    securityGroups.delete(input.GroupId);
    return {};
  });
  ec2Mock.on(DeleteKeyPairCommand).callsFake((input: { KeyName: string }) => {
    record("DeleteKeyPair", input);
    keyPairs.delete(input.KeyName);
    return { Return: true };
  });
  ec2Mock.on(RunInstancesCommand).callsFake((input: RunInstancesCommandInput) => {
    record("RunInstances", input);
    attempts += 1;
    // Idempotency: the same ClientToken gets the same instance back.
    const same = [...instances.values()].find((i) => i.input.ClientToken !== undefined && i.input.ClientToken === input.ClientToken);
    if (same) return { Instances: [view(same)], ReservationId: "r-fake" };
    if (!types[input.InstanceType ?? ""]) throw ec2Error("InvalidParameterValue", `Invalid value '${input.InstanceType}' for InstanceType.`);
    options.onRunInstances?.(input, attempts);
    const zone = input.Placement?.AvailabilityZone ?? `${region}a`;
    // The instance's own copy: tags changed later (CreateTags) do not rewrite the recorded call, and its resources' tag lists are separate.
    const instance: FakeInstance = { id: presetIds.shift() ?? id("i"), input: structuredClone(input), state: "pending", polls: 0, launchTime: new Date(), zone, spot: input.InstanceMarketOptions?.MarketType === "spot" };
    const endReason = options.endBeforeRunning?.(attempts);
    if (endReason) instance.reason = { Code: endReason, Message: `${endReason}: Server error` };
    instances.set(instance.id, instance);
    return { Instances: [view(instance)], ReservationId: "r-fake", OwnerId: "123456789012" };
  });
  /** Whether tags pass `tag-key` / `tag:K` filters (the only ones runctl sends). */
  const passes = (tags: readonly Tag[], filters: readonly { Name?: string; Values?: string[] }[] | undefined): boolean =>
    (filters ?? []).every((f) => {
      if (f.Name === "tag-key") return tags.some((t) => f.Values?.includes(t.Key ?? ""));
      if (f.Name?.startsWith("tag:")) return tags.some((t) => t.Key === f.Name!.slice(4) && f.Values?.includes(t.Value ?? ""));
      return true;
    });
  ec2Mock.on(DescribeVolumesCommand).callsFake((input: { Filters?: { Name?: string; Values?: string[] }[] }) => {
    record("DescribeVolumes", input);
    // Root volumes go with their instance (DeleteOnTermination): only live instances have one.
    const volumes = [...instances.values()]
      .filter((i) => i.state !== "terminated" && passes(tagsFor(i.input, "volume"), input.Filters))
      .map((i) => ({ VolumeId: `vol-${i.id.slice(2)}`, State: "in-use", Size: 30, AvailabilityZone: i.zone, Tags: tagsFor(i.input, "volume"), Attachments: [{ InstanceId: i.id, State: "attached", Device: "/dev/sda1", DeleteOnTermination: true }] }));
    return { Volumes: volumes };
  });
  ec2Mock.on(DescribeKeyPairsCommand).callsFake((input: { Filters?: { Name?: string; Values?: string[] }[] }) => {
    record("DescribeKeyPairs", input);
    return { KeyPairs: [...keyPairs.entries()].filter(([, k]) => passes(k.tags, input.Filters)).map(([name, k]) => ({ KeyName: name, KeyPairId: k.keyPairId, Tags: k.tags })) };
  });
  ec2Mock.on(DescribeSecurityGroupsCommand).callsFake((input: { Filters?: { Name?: string; Values?: string[] }[] }) => {
    record("DescribeSecurityGroups", input);
    return { SecurityGroups: [...securityGroups.entries()].filter(([, g]) => passes(g.tags, input.Filters)).map(([id, g]) => ({ GroupId: id, GroupName: g.name, Tags: g.tags, VpcId: "vpc-0123456789abcdef0" })) };
  });
  // Snapshots: this account has none (the sweep's unit tests make their own).
  ec2Mock.on(DescribeSnapshotsCommand).callsFake((input: unknown) => {
    record("DescribeSnapshots", input);
    return { Snapshots: [] };
  });
  /** Sets tags by id as AWS does (an existing key's value is replaced); an unknown id fails the whole call. */
  ec2Mock.on(CreateTagsCommand).callsFake((input: { Resources: string[]; Tags: Tag[] }) => {
    record("CreateTags", input);
    const targets: Tag[][] = input.Resources.map((rid) => {
      const instance = instances.get(rid) ?? [...instances.values()].find((i) => `vol-${i.id.slice(2)}` === rid);
      if (instance && instance.state !== "terminated") return rid.startsWith("vol-") ? tagsFor(instance.input, "volume") : tagsFor(instance.input, "instance");
      const group = securityGroups.get(rid);
      if (group) return group.tags;
      const key = [...keyPairs.values()].find((k) => k.keyPairId === rid);
      if (key) return key.tags;
      const kind = rid.startsWith("sg-") ? "InvalidGroup.NotFound" : rid.startsWith("key-") ? "InvalidKeyPair.NotFound" : rid.startsWith("vol-") ? "InvalidVolume.NotFound" : "InvalidInstanceID.NotFound";
      throw ec2Error(kind, `The ID '${rid}' does not exist`);
    });
    for (const tags of targets) {
      for (const t of input.Tags) {
        const at = tags.findIndex((x) => x.Key === t.Key);
        if (at >= 0) tags[at] = { Key: t.Key, Value: t.Value ?? "" };
        else tags.push({ Key: t.Key, Value: t.Value ?? "" });
      }
    }
    return {};
  });
  ec2Mock.on(DescribeInstancesCommand).callsFake(async (input: { InstanceIds?: string[]; Filters?: { Name?: string; Values?: string[] }[] }) => {
    record("DescribeInstances", input);
    if (!input.InstanceIds) {
      const matching = [...instances.values()].filter((i) => passes(tagsFor(i.input, "instance"), input.Filters)).map(view);
      return { Reservations: matching.length ? [{ ReservationId: "r-fake", OwnerId: "123456789012", Instances: matching }] : [] };
    }
    const out: Instance[] = [];
    for (const wanted of input.InstanceIds ?? []) {
      const i = instances.get(wanted);
      if (!i) throw ec2Error("InvalidInstanceID.NotFound", `The instance ID '${wanted}' does not exist`);
      i.polls += 1;
      if (i.state === "pending" && i.reason) {
        i.state = "terminated";
      } else if (i.state === "pending" && !options.stuckPending && i.polls > (options.pendingPolls ?? 1)) {
        i.booting ??= (async () => {
          const key = i.input.KeyName ? keyPairs.get(i.input.KeyName)?.publicKey : undefined;
          i.address = options.boot ? await options.boot({ id: i.id, input: i.input, publicKey: key }) : { publicIp: "192.0.2.10" };
        })();
        await i.booting;
        i.state = "running";
      } else if (i.state === "shutting-down" && i.polls > (options.shuttingDownPolls ?? 1)) {
        i.state = "terminated";
      }
      out.push(view(i));
    }
    return { Reservations: out.length ? [{ ReservationId: "r-fake", OwnerId: "123456789012", Instances: out }] : [] };
  });
  ec2Mock.on(TerminateInstancesCommand).callsFake((input: { InstanceIds: string[] }) => {
    record("TerminateInstances", input);
    return {
      TerminatingInstances: input.InstanceIds.map((wanted) => {
        const i = instances.get(wanted);
        if (!i) throw ec2Error("InvalidInstanceID.NotFound", `The instance ID '${wanted}' does not exist`);
        const previous = i.state;
        if (i.state !== "terminated") {
          i.state = "shutting-down";
          i.polls = 0;
          i.reason ??= { Code: "Client.UserInitiatedShutdown", Message: "Client.UserInitiatedShutdown: User initiated shutdown" };
        }
        return { InstanceId: wanted, PreviousState: { Name: previous }, CurrentState: { Name: i.state } };
      }),
    };
  });
  ec2Mock.on(DescribeSpotPriceHistoryCommand).callsFake((input: { InstanceTypes?: string[]; AvailabilityZone?: string }) => {
    record("DescribeSpotPriceHistory", input);
    const prices = options.spotPrices ?? { [`${region}a`]: 0.3017, [`${region}b`]: 0.2911 };
    return {
      SpotPriceHistory: Object.entries(prices)
        .filter(([zone]) => !input.AvailabilityZone || zone === input.AvailabilityZone)
        .map(([zone, price]) => ({ AvailabilityZone: zone, InstanceType: input.InstanceTypes?.[0], ProductDescription: "Linux/UNIX", SpotPrice: price.toFixed(6), Timestamp: new Date() })),
    };
  });

  return {
    ec2,
    ssm,
    ec2Mock: ec2Mock as unknown as AwsStub<any, any, any>,
    instances,
    keyPairs,
    securityGroups,
    calls: () => log.map((c) => c.name),
    inputsOf: <T,>(command: string) => log.filter((c) => c.name === command).map((c) => c.input as T),
    reclaim(instanceId) {
      const i = instances.get(instanceId);
      if (!i) return;
      i.state = "terminated";
      i.reason = { Code: "Server.SpotInstanceTermination", Message: "Server.SpotInstanceTermination: Spot instance termination" };
    },
  };
}

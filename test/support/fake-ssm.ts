// A fake AWS Systems Manager control plane for tests: an SSMClient whose calls are answered by
// aws-sdk-client-mock (nothing leaves this process), where SendCommand really runs the
// AWS-RunShellScript commands on THIS machine with `sh -c`, as if the instance were this machine.
// It reproduces what the real service does that a client must cope with: a random CommandId,
// InvocationDoesNotExist on the first poll(s) (eventual consistency), Pending -> InProgress ->
// Success/Failed/Cancelled/TimedOut with ResponseCode -1 while running, inline output cut at 24,000
// (stdout) and 8,000 (stderr) characters, the whole output written to S3 under AWS's key layout when
// OutputS3BucketName is set, CancelCommand killing the process group, throttling bursts, and an SSM
// agent that is not online (InvalidInstanceId). Errors are the SDK's own exception classes.
import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CancelCommandCommand,
  DescribeInstanceInformationCommand,
  GetCommandInvocationCommand,
  InvalidCommandId,
  InvalidInstanceId,
  InvocationDoesNotExist,
  SSMClient,
  SendCommandCommand,
  ThrottlingException,
  type CommandInvocationStatus,
  type GetCommandInvocationCommandOutput,
  type SendCommandCommandInput,
} from "@aws-sdk/client-ssm";
import { PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { mockClient, type AwsClientStub } from "aws-sdk-client-mock";

/** The SSM APIs the fake answers. */
export type FakeSsmApi = "SendCommand" | "GetCommandInvocation" | "CancelCommand" | "DescribeInstanceInformation";

/** How the instance's SSM agent behaves. */
export type FakeAgentState = "online" | "connection-lost" | "unregistered";

/** Options of {@link fakeSsm}. */
export interface FakeSsmOptions {
  /** The instance the fake manages. @defaultValue "i-0123456789abcdef0" */
  readonly instanceId?: string;
  /** More instances that answer the same way (a multi-node gang). @defaultValue none */
  readonly moreInstanceIds?: readonly string[] | undefined;
  /** Extra environment of every command (e.g. AWS credentials and region, as an instance profile gives). @defaultValue `{}` */
  readonly env?: Readonly<Record<string, string>>;
  /** The SSM agent's state. @defaultValue "online" */
  readonly agent?: FakeAgentState;
  /** GetCommandInvocation answers InvocationDoesNotExist this many times per command first. @defaultValue 1 */
  readonly invisiblePolls?: number;
  /** Visible polls that still say Pending before InProgress. @defaultValue 1 */
  readonly pendingPolls?: number;
  /** Client the "agent" writes output objects with when OutputS3BucketName is set. @defaultValue none (output objects are not written) */
  readonly s3?: S3Client;
}

/** One SendCommand, as the fake saw and ran it. */
export interface FakeInvocation {
  readonly commandId: string;
  /** The SendCommand input. */
  readonly input: SendCommandCommandInput;
  /** `commands` joined with newlines: what `sh -c` ran. */
  readonly script: string;
  status: CommandInvocationStatus;
  statusDetails: string;
  /** -1 until the process ended. */
  responseCode: number;
  stdout: Buffer;
  stderr: Buffer;
  /** GetCommandInvocation calls answered for it. */
  polls: number;
  /** The process group leader, while it runs. */
  child: ChildProcess | undefined;
  /** Resolves when the invocation reached its final status. */
  readonly done: Promise<void>;
}

/** The fake: a mocked SSMClient plus controls and records. */
export interface FakeSsm {
  /** Pass this to ssmTransport({ client }). */
  readonly client: SSMClient;
  /** The aws-sdk-client-mock stub (for commandCalls). */
  readonly mock: AwsClientStub<SSMClient>;
  readonly instanceId: string;
  /** Every SendCommand, in order. */
  readonly invocations: FakeInvocation[];
  /** The SSM agent's state (change it at any time). */
  agent: FakeAgentState;
  /** The next `count` calls (of `apis`, default all) throw ThrottlingException. */
  throttle(count: number, apis?: readonly FakeSsmApi[]): void;
  /** How many calls of `api` were made (throttled ones included). */
  calls(api: FakeSsmApi): number;
  /** Kills what still runs, restores the client, removes the fake's folder. */
  restore(): void;
}

const STDOUT_LIMIT = 24_000;
const STDERR_LIMIT = 8_000;

function metadata(status: number): { httpStatusCode: number; requestId: string; attempts: number; totalRetryDelay: number } {
  return { httpStatusCode: status, requestId: randomUUID(), attempts: 1, totalRetryDelay: 0 };
}

/**
 * Creates the fake SSM control plane for one instance.
 *
 * @example
 * ```ts
 * const ssm = fakeSsm({ env: { AWS_ACCESS_KEY_ID: "S3RVER", AWS_SECRET_ACCESS_KEY: "S3RVER" }, s3: s3Client });
 * const t = ssmTransport({ instanceId: ssm.instanceId, client: ssm.client, user: null, pollMs: 20 });
 * ```
 */
export function fakeSsm(options: FakeSsmOptions = {}): FakeSsm {
  const instanceId = options.instanceId ?? "i-0123456789abcdef0";
  const answering = new Set([instanceId, ...(options.moreInstanceIds ?? [])]);
  const client = new SSMClient({ region: "us-east-1", credentials: { accessKeyId: "FAKE", secretAccessKey: "FAKE" } });
  const mock = mockClient(client);
  const workDir = mkdtempSync(join(tmpdir(), "runctl-fake-ssm-"));
  const invocations: FakeInvocation[] = [];
  const byId = new Map<string, FakeInvocation>();
  const counts = new Map<FakeSsmApi, number>();
  let throttleLeft = 0;
  let throttleApis: readonly FakeSsmApi[] | undefined;
  const invisiblePolls = options.invisiblePolls ?? 1;
  const pendingPolls = options.pendingPolls ?? 1;

  const fake: FakeSsm = {
    client,
    mock,
    instanceId,
    invocations,
    agent: options.agent ?? "online",
    throttle(count, apis) {
      throttleLeft = count;
      throttleApis = apis;
    },
    calls(api) {
      return counts.get(api) ?? 0;
    },
    restore() {
      for (const inv of invocations) killGroup(inv.child);
      mock.restore();
      rmSync(workDir, { recursive: true, force: true });
    },
  };

  /** Counts the call and throws a throttling error while a burst lasts. */
  const enter = (api: FakeSsmApi): void => {
    counts.set(api, (counts.get(api) ?? 0) + 1);
    if (throttleLeft > 0 && (!throttleApis || throttleApis.includes(api))) {
      throttleLeft -= 1;
      throw new ThrottlingException({ message: "Rate exceeded", Message: "Rate exceeded", $metadata: metadata(400) });
    }
  };

  const finish = async (inv: FakeInvocation, status: CommandInvocationStatus, details: string, code: number): Promise<void> => {
    const input = inv.input;
    // The real agent uploads the output files before it reports the final status.
    if (input.OutputS3BucketName && options.s3) {
      const base = [input.OutputS3KeyPrefix, inv.commandId, input.InstanceIds?.[0] ?? instanceId, "awsrunShellScript", "0.awsrunShellScript"].filter((p) => p).join("/");
      for (const [name, body] of [["stdout", inv.stdout], ["stderr", inv.stderr]] as const) {
        if (body.length === 0) continue;
        await options.s3.send(new PutObjectCommand({ Bucket: input.OutputS3BucketName, Key: `${base}/${name}`, Body: body }));
      }
    }
    inv.responseCode = code;
    inv.statusDetails = details;
    inv.status = status;
  };

  mock.onAnyCommand().rejects(new Error("fake-ssm: this SSM API is not faked"));

  mock.on(SendCommandCommand).callsFake(async (input: SendCommandCommandInput) => {
    enter("SendCommand");
    if (fake.agent !== "online" || !input.InstanceIds || input.InstanceIds.length !== 1 || !answering.has(input.InstanceIds[0]!)) {
      throw new InvalidInstanceId({ message: `Instances [[${(input.InstanceIds ?? []).join(", ")}]] not in a valid state for account 123456789012`, $metadata: metadata(400) });
    }
    if (input.DocumentName !== "AWS-RunShellScript") throw new Error(`fake-ssm: only AWS-RunShellScript is faked, got ${String(input.DocumentName)}`);
    const commands = input.Parameters?.["commands"] ?? [];
    const script = commands.join("\n");
    const commandId = randomUUID();
    let settle!: () => void;
    const inv: FakeInvocation = {
      commandId,
      input,
      script,
      status: "Pending",
      statusDetails: "Pending",
      responseCode: -1,
      stdout: Buffer.alloc(0),
      stderr: Buffer.alloc(0),
      polls: 0,
      child: undefined,
      done: new Promise<void>((r) => (settle = r)),
    };
    invocations.push(inv);
    byId.set(commandId, inv);

    // Like the SSM agent: its own process group, stdin from /dev/null, a work folder as cwd.
    const child = spawn("sh", ["-c", script], { cwd: workDir, env: { ...process.env, ...options.env }, stdio: ["ignore", "pipe", "pipe"], detached: true });
    inv.child = child;
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on("data", (d: Buffer) => out.push(d));
    child.stderr!.on("data", (d: Buffer) => err.push(d));
    const timeoutS = Number(input.Parameters?.["executionTimeout"]?.[0] ?? "3600");
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child);
    }, timeoutS * 1000);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      inv.child = undefined;
      inv.stdout = Buffer.concat(out);
      inv.stderr = Buffer.concat(err);
      const exit = code ?? 128 + signalNumber(signal);
      const done =
        inv.status === "Cancelling"
          ? finish(inv, "Cancelled", "Canceled", -1)
          : timedOut
            ? finish(inv, "TimedOut", "Execution Timed Out", exit)
            : finish(inv, exit === 0 ? "Success" : "Failed", exit === 0 ? "Success" : "Failed", exit);
      void done.then(settle, (e: unknown) => {
        inv.stderr = Buffer.concat([inv.stderr, Buffer.from(`\nfake-ssm: output upload failed: ${String(e)}\n`)]);
        inv.status = "Failed";
        inv.statusDetails = "Failed";
        settle();
      });
    });
    return {
      $metadata: metadata(200),
      Command: {
        CommandId: commandId,
        DocumentName: input.DocumentName,
        DocumentVersion: "$DEFAULT",
        Comment: input.Comment,
        InstanceIds: input.InstanceIds,
        Parameters: input.Parameters,
        Status: "Pending",
        StatusDetails: "Pending",
        OutputS3BucketName: input.OutputS3BucketName,
        OutputS3KeyPrefix: input.OutputS3KeyPrefix,
        TimeoutSeconds: input.TimeoutSeconds,
        RequestedDateTime: new Date(),
      },
    };
  });

  mock.on(GetCommandInvocationCommand).callsFake(async (input: { CommandId?: string; InstanceId?: string }) => {
    enter("GetCommandInvocation");
    const inv = input.CommandId ? byId.get(input.CommandId) : undefined;
    if (!inv || input.InstanceId !== inv.input.InstanceIds?.[0]) throw new InvocationDoesNotExist({ message: "", $metadata: metadata(400) });
    inv.polls += 1;
    if (inv.polls <= invisiblePolls) throw new InvocationDoesNotExist({ message: "", $metadata: metadata(400) });
    const running = inv.status === "Pending" || inv.status === "InProgress" || inv.status === "Cancelling";
    if (inv.status === "Pending" && inv.polls > invisiblePolls + pendingPolls) {
      inv.status = "InProgress";
      inv.statusDetails = "InProgress";
    }
    const stdout = running ? "" : inv.stdout.toString("utf8");
    const stderr = running ? "" : inv.stderr.toString("utf8");
    const base = inv.input.OutputS3BucketName
      ? `https://s3.us-east-1.amazonaws.com/${inv.input.OutputS3BucketName}/${[inv.input.OutputS3KeyPrefix, inv.commandId, inv.input.InstanceIds?.[0] ?? instanceId, "awsrunShellScript", "0.awsrunShellScript"].filter((p) => p).join("/")}`
      : "";
    const answer: GetCommandInvocationCommandOutput = {
      $metadata: metadata(200),
      CommandId: inv.commandId,
      InstanceId: instanceId,
      Comment: inv.input.Comment ?? "",
      DocumentName: "AWS-RunShellScript",
      DocumentVersion: "$DEFAULT",
      PluginName: "aws:runShellScript",
      ResponseCode: running ? -1 : inv.responseCode,
      Status: inv.status,
      StatusDetails: inv.status === "InProgress" ? "In Progress" : inv.statusDetails,
      StandardOutputContent: stdout.slice(0, STDOUT_LIMIT),
      StandardOutputUrl: base ? `${base}/stdout` : "",
      StandardErrorContent: stderr.slice(0, STDERR_LIMIT),
      StandardErrorUrl: base ? `${base}/stderr` : "",
      CloudWatchOutputConfig: { CloudWatchLogGroupName: "", CloudWatchOutputEnabled: false },
    };
    return answer;
  });

  mock.on(CancelCommandCommand).callsFake(async (input: { CommandId?: string; InstanceIds?: string[] }) => {
    enter("CancelCommand");
    const inv = input.CommandId ? byId.get(input.CommandId) : undefined;
    if (!inv) throw new InvalidCommandId({ message: "", $metadata: metadata(400) });
    if (inv.child && (inv.status === "Pending" || inv.status === "InProgress")) {
      inv.status = "Cancelling";
      inv.statusDetails = "Cancelling";
      killGroup(inv.child);
    }
    return { $metadata: metadata(200) };
  });

  mock.on(DescribeInstanceInformationCommand).callsFake(async (input: { Filters?: { Key?: string; Values?: string[] }[] }) => {
    enter("DescribeInstanceInformation");
    const wanted = input.Filters?.find((f) => f.Key === "InstanceIds")?.Values;
    const listed = fake.agent !== "unregistered" && (!wanted || wanted.includes(instanceId));
    return {
      $metadata: metadata(200),
      InstanceInformationList: listed
        ? [
            {
              InstanceId: instanceId,
              PingStatus: fake.agent === "online" ? "Online" : "ConnectionLost",
              LastPingDateTime: new Date(),
              AgentVersion: "3.3.987.0",
              IsLatestVersion: true,
              PlatformType: "Linux",
              PlatformName: "Ubuntu",
              ResourceType: "EC2Instance",
            },
          ]
        : [],
    };
  });

  return fake;
}

function killGroup(child: ChildProcess | undefined): void {
  if (!child?.pid || child.exitCode !== null) return;
  try {
    process.kill(-child.pid, "SIGKILL");
  } catch {
    // already gone
  }
}

function signalNumber(signal: NodeJS.Signals | null): number {
  const numbers: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15, SIGPIPE: 13 };
  return signal ? (numbers[signal] ?? 1) : 0;
}

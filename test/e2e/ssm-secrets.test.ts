/**
 * Over SSM, no secret is ever written to S3, to the SSM command history, or to the machine's disk
 * (issue 10, item 14). SSM has no private stdin: what runctl sends on a command's stdin (the launch
 * spec, a staged sync request) is staged in S3 first, so the client's credentials must never be
 * in it; the machine uses its instance profile. Distinctive fake client keys are used, the staging
 * storage never deletes anything (so every staged object can be read afterwards), and every SSM
 * command parameter, every object in the bucket and every file of the machine's runctl folder is
 * searched for them. A storage that insists on forwarding (`forwardCredentials: true`) is refused
 * with UNSUPPORTED before anything is created.
 */
import { readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Runctl, RunctlError, type Machine, type Provider, type Storage } from "runctl";
import { ec2, prewarmVolume, s3, type S3Storage } from "runctl/aws";
import { ssmTransport } from "../../src/transport/ssm/index.js";
import { fakeSsm, type FakeSsm } from "../support/fake-ssm.js";
import { S3RVER_CLIENT_SETTINGS, TEST_AWS_CREDENTIALS, startS3Server, type TestS3Server } from "../support/s3-server.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";

useTempRunctlHome("e2e-ssm-secrets");
const TRAINING = join(dirname(fileURLToPath(import.meta.url)), "..", "fixtures", "trainers");

/**
 * The client's own credentials: s3rver knows only the access key id S3RVER and checks no
 * signatures, so a distinctive secret key and session token work for the client's calls.
 */
const CLIENT = {
  accessKeyId: TEST_AWS_CREDENTIALS.accessKeyId,
  secretAccessKey: "clientSecretKey/Do+Not+Stage/8e2b7c",
  sessionToken: "clientSessionToken-Never-In-S3-41d9",
} as const;
/** What must never be written anywhere. */
const SECRET_VALUES = [CLIENT.secretAccessKey, CLIENT.sessionToken];

let server: TestS3Server;
let ssm: FakeSsm;

beforeAll(async () => {
  server = await startS3Server({ buckets: ["runctl-test"] });
  ssm = fakeSsm({
    // The instance profile: the machine's own credentials (not the client's).
    env: {
      AWS_ACCESS_KEY_ID: TEST_AWS_CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: TEST_AWS_CREDENTIALS.secretAccessKey,
      AWS_DEFAULT_REGION: "us-east-1",
      AWS_EC2_METADATA_DISABLED: "true",
      PATH: `/usr/bin:${process.env["PATH"] ?? ""}`,
    },
    s3: clientBucket("staging").client,
  });
});
afterAll(async () => {
  ssm?.restore();
  await server?.stop();
});

function clientBucket(prefix: string, extra: { forwardCredentials?: boolean } = {}): S3Storage {
  return s3(`s3://runctl-test/${prefix}`, { ...S3RVER_CLIENT_SETTINGS, endpoint: server.endpoint, credentials: CLIENT, ...extra });
}

/** A staging storage that keeps everything staged in it (deletes are recorded, not done). */
function keepingStorage(inner: S3Storage): Storage & { deleted: string[] } {
  const deleted: string[] = [];
  return {
    uri: inner.uri,
    deleted,
    put: (key, body, o) => inner.put(key, body, o),
    get: (key, o) => inner.get(key, o),
    stat: (key, o) => inner.stat(key, o),
    list: (prefix, o) => inner.list(prefix, o),
    delete: async (keys) => {
      deleted.push(...(typeof keys === "string" ? [keys] : keys));
    },
    machineDescriptor: (c) => inner.machineDescriptor(c),
    machineSecrets: (o) => inner.machineSecrets(o),
  };
}

/** A provider with one machine reached only through SSM; `declares` says so up front (as ec2() does). */
function ssmProvider(staging: Storage, rootDir: string, declares: boolean): Provider & { provisioned: number } {
  const provider = {
    name: "ssm-test",
    sharesLocalFilesystem: false,
    provisioned: 0,
    ...(declares ? { stdinLeavesCopy: true } : {}),
    async provision(request: { runId: string }): Promise<Machine> {
      provider.provisioned += 1;
      const transport = ssmTransport({ instanceId: ssm.instanceId, client: ssm.client, staging, runId: request.runId, user: null, pollMs: 25, maxPollMs: 250 });
      await transport.ready({ timeoutMs: 20_000 });
      return {
        id: ssm.instanceId,
        provider: "ssm-test",
        address: ssm.instanceId,
        transport,
        rootDir,
        python: "/usr/bin/python3",
        sharesLocalFilesystem: false,
        tags: {},
        hourlyPriceUsd: 0,
        record: { provider: "ssm-test", id: ssm.instanceId, rootDir },
      };
    },
    async release(machine: Machine) {
      await machine.transport.close();
    },
    async describe() {
      return "running" as const;
    },
  };
  return provider;
}

/** The script the machine ran for an invocation, decoded from the transport's base64 wrapper. */
function decoded(script: string): string {
  const b64 = /printf '%s' ([A-Za-z0-9+/=]+) \| base64 -d/.exec(script)?.[1];
  return b64 ? Buffer.from(b64, "base64").toString("utf8") : script;
}

/** Every object in the bucket (all prefixes), read whole. */
async function bucketObjects(): Promise<Map<string, Buffer>> {
  const root = s3("s3://runctl-test", { ...S3RVER_CLIENT_SETTINGS, endpoint: server.endpoint, credentials: TEST_AWS_CREDENTIALS });
  const out = new Map<string, Buffer>();
  for await (const o of root.list("")) {
    const chunks: Buffer[] = [];
    for await (const c of await root.get(o.key)) chunks.push(c as Buffer);
    out.set(o.key, Buffer.concat(chunks));
  }
  return out;
}

/** Every regular file under `dir`. */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const st = statSync(path, { throwIfNoEntry: false });
    if (st?.isDirectory()) out.push(...filesUnder(path));
    else if (st?.isFile()) out.push(path);
  }
  return out;
}

/** Fails naming where a client secret was found: SSM parameters and output, S3 objects, machine files. */
async function expectNoSecretAnywhere(firstInvocation: number, rootDir: string): Promise<{ objects: Map<string, Buffer> }> {
  for (const inv of ssm.invocations.slice(firstInvocation)) {
    const seen = [JSON.stringify(inv.input), decoded(inv.script), inv.stdout.toString("utf8"), inv.stderr.toString("utf8")].join("\n");
    for (const secret of SECRET_VALUES) expect(seen.includes(secret), `SSM command ${inv.commandId} (${decoded(inv.script).slice(0, 120)}) holds ${secret}`).toBe(false);
  }
  const objects = await bucketObjects();
  for (const [key, body] of objects) {
    for (const secret of SECRET_VALUES) expect(body.includes(secret), `s3://runctl-test/${key} holds ${secret}`).toBe(false);
  }
  for (const file of filesUnder(rootDir)) {
    const body = readFileSync(file);
    for (const secret of SECRET_VALUES) expect(body.includes(secret), `${file} holds ${secret}`).toBe(false);
  }
  return { objects };
}

describe("secrets over SSM", () => {
  it("a whole run with S3 checkpoints: the client's keys are in no staged object, no SSM command and no file on the machine", async () => {
    const inner = clientBucket("staging-run");
    const staging = keepingStorage(inner);
    const rootDir = tempDir("ssm-secrets-machine");
    const firstInvocation = ssm.invocations.length;
    const run = Runctl.instance(ssmProvider(staging, rootDir, false))
      .sync(TRAINING)
      .checkpoints({ storage: clientBucket("ckpt"), keep: 2 })
      .outputs(clientBucket("outputs"))
      .train("train_mnist_e2e.py", { hyperparams: { steps: 30, "checkpoint-every": 10 } });
    for await (const _ of run) void _;
    const result = await run;
    expect(result.status, JSON.stringify(result.error)).toBe("succeeded");
    // The machine committed checkpoints with its own (instance profile) credentials.
    const latest = await run.checkpoints().latest();
    expect(latest?.step).toBe(30);
    expect((await latest!.verify()).ok).toBe(true);

    const { objects } = await expectNoSecretAnywhere(firstInvocation, rootDir);
    // The search really covered the launch spec and the sync: both were staged and kept.
    const staged = [...objects.entries()].filter(([k]) => k.startsWith(`staging-run/runctl-staging/${run.runId}/`));
    expect(staged.some(([k, b]) => k.endsWith(".stdin") && b.toString("utf8").includes(`"runId": "${run.runId}"`) || b.toString("utf8").includes(`"runId":"${run.runId}"`))).toBe(true);
    expect(staging.deleted.length).toBeGreaterThan(0);
    expect(ssm.invocations.slice(firstInvocation).some((inv) => decoded(inv.script).includes(" launch "))).toBe(true);
  });

  it("a staged sync (machine.sync with staging) sends no credentials in its staged request", async () => {
    const staging = keepingStorage(clientBucket("staging-sync"));
    const rootDir = tempDir("ssm-secrets-sync");
    const code = tempDir("ssm-secrets-code");
    writeFileSync(join(code, "a.txt"), "hello\n");
    const firstInvocation = ssm.invocations.length;
    const machine = await Runctl.instance(ssmProvider(staging, rootDir, false)).provision();
    try {
      // The tar goes through the client's bucket; the machine fetches it with its own credentials.
      const synced = await machine.sync(code, join(rootDir, "work", "code"), { staging: { storage: clientBucket("sync-tars"), prefix: "tars" } });
      expect(synced.uploadedFiles).toBe(1);
      expect(readFileSync(join(rootDir, "work", "code", "a.txt"), "utf8")).toBe("hello\n");
    } finally {
      await machine.release();
    }
    const { objects } = await expectNoSecretAnywhere(firstInvocation, rootDir);
    // The staged sync-apply request was read: it names the tar and carries no secrets.
    const requests = [...objects.values()].map((b) => b.toString("utf8")).filter((t) => t.includes('"key":"tars/'));
    expect(requests.length).toBe(1);
    expect(JSON.parse(requests[0]!)).toMatchObject({ secrets: null });
  });

  it("forwardCredentials: true is refused with UNSUPPORTED at the plan call when the provider says its machines are reached over SSM (ec2 with SSM access too)", () => {
    const staging = keepingStorage(clientBucket("staging-refused"));
    const provider = ssmProvider(staging, tempDir("ssm-secrets-refused"), true);
    const forwarding = clientBucket("ckpt-forwarding", { forwardCredentials: true });
    const plan = Runctl.instance(provider).sync(TRAINING);
    for (const call of [() => plan.checkpoints({ storage: forwarding }), () => plan.data(forwarding, { to: "data" }), () => plan.outputs(forwarding)]) {
      let err: unknown;
      try {
        call();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(RunctlError);
      expect((err as RunctlError).code).toBe("UNSUPPORTED");
      expect((err as RunctlError).message).toMatch(/forwardCredentials: true.*SSM.*instance profile/);
    }
    // Unset forwarding is fine: the machine uses its instance profile.
    expect(() => plan.checkpoints({ storage: clientBucket("ckpt-default") })).not.toThrow();
    expect(provider.provisioned).toBe(0);

    const viaEc2 = ec2({ region: "us-east-1", instanceType: "t3.micro", instanceProfile: "runctl-test", access: { kind: "ssm", staging: clientBucket("staging-ec2"), user: null } });
    expect(viaEc2.stdinLeavesCopy).toBe(true);
    expect(() => Runctl.instance(viaEc2).checkpoints({ storage: forwarding })).toThrow(expect.objectContaining({ code: "UNSUPPORTED" }));
  });

  it("a provider that does not say so is caught at launch: UNSUPPORTED, nothing launched, no secret staged", async () => {
    const staging = keepingStorage(clientBucket("staging-late"));
    const rootDir = tempDir("ssm-secrets-late");
    const firstInvocation = ssm.invocations.length;
    const run = Runctl.instance(ssmProvider(staging, rootDir, false))
      .sync(TRAINING)
      .checkpoints({ storage: clientBucket("ckpt-late", { forwardCredentials: true }) })
      .train("train_mnist_e2e.py", { hyperparams: { steps: 3 } });
    // A failure before the trainer starts rejects the run with the error itself.
    await expect(Promise.resolve(run)).rejects.toMatchObject({ code: "UNSUPPORTED", message: expect.stringMatching(/forwardCredentials: true/) });
    expect(ssm.invocations.slice(firstInvocation).some((inv) => decoded(inv.script).includes(" launch "))).toBe(false);
    await expectNoSecretAnywhere(firstInvocation, rootDir);
  });

  it("prewarmVolume() refuses to send credentials over SSM (its stdin would be staged in S3), before any command", async () => {
    const staging = keepingStorage(clientBucket("staging-prewarm"));
    const transport = ssmTransport({ instanceId: ssm.instanceId, client: ssm.client, staging, runId: "prewarm-secrets", user: null, pollMs: 25 });
    const firstInvocation = ssm.invocations.length;
    try {
      await expect(prewarmVolume(transport, { source: "s3://runctl-test/data", mountPoint: "/mnt/data", credentials: CLIENT })).rejects.toMatchObject({ code: "UNSUPPORTED" });
    } finally {
      await transport.close();
    }
    expect(ssm.invocations.length).toBe(firstInvocation);
    await expectNoSecretAnywhere(firstInvocation, tempDir("ssm-secrets-prewarm"));
  });
});

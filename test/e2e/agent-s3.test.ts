// S3 in the machine-side agent (docs/agent-protocol.md, "S3"): checkpoints, resume, data and outputs
// against a real S3-protocol server (s3rver, its own process), through both clients the agent can
// use: boto3 and the aws CLI. Every test spawns the real agent file, like test/integration/agent.test.ts.
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import {
  type AgentEvent,
  genName,
  cleanUpAgentTests,
  type Json,
  launch,
  makeRun,
  type Manifest,
  type ManifestFile,
  PY,
  readEvents,
  readText,
  type Run,
  sha256,
  sleep,
  SYSTEM_PY,
  tmp,
} from "../support/agent-harness.js";
import { startHttpGateProxy } from "../support/http-gate-proxy.js";
import { S3RVER_CLIENT_SETTINGS, startS3Server, TEST_AWS_CREDENTIALS, type TestS3Server } from "../support/s3-server.js";
import { checkpointStore } from "../../src/checkpoints/index.js";
import { s3 as s3Storage } from "../../src/storage/s3/index.js";

const BUCKET = "runctl-test";
// The agents here run under SYSTEM_PY (it has boto3/botocore from python3-boto3); the trainers under PY.

/** makeRun()'s checkpoint defaults for these tests: no storage unless a test sets one, a long settle, quick polls. */
const S3_CHECKPOINTS = { storage: null, settleMs: 30_000, pollMs: 50 };

type Backend = "boto3" | "cli";
let shared: TestS3Server;

beforeAll(async () => {
  const r = spawnSync("dpkg-query", ["-W", "-f", "${db:Status-Status}", "python3-boto3", "awscli"], { encoding: "utf8" });
  if (!r.stdout.includes("installed")) throw new Error("these tests need python3-boto3 and awscli (apt-get install -y --no-install-recommends python3-boto3 awscli)");
  shared = await startS3Server({ buckets: [BUCKET] });
});

afterAll(async () => {
  cleanUpAgentTests(SYSTEM_PY);
  await shared?.stop();
});

function ofType(events: AgentEvent[], type: string): AgentEvent[] {
  return events.filter((e) => e.type === type);
}

// -- the S3 server's side: objects as s3rver keeps them on disk (<dir>/<bucket>/<key>._S3rver_object)

function objectPath(s3: TestS3Server, key: string): string {
  const parts = key.split("/");
  const last = parts.pop() ?? "";
  return join(s3.dir, BUCKET, ...parts, `${last}._S3rver_object`);
}

function readObject(s3: TestS3Server, key: string): Buffer | undefined {
  try {
    return readFileSync(objectPath(s3, key));
  } catch {
    return undefined;
  }
}

/** Every key below prefix (s3rver's folder), sorted. */
function listKeys(s3: TestS3Server, prefix: string): string[] {
  const out: string[] = [];
  const walk = (dir: string, rel: string): void => {
    if (!existsSync(dir)) return;
    for (const name of readdirSync(dir)) {
      const full = join(dir, name);
      if (lstatSync(full).isDirectory()) walk(full, `${rel}${name}/`);
      else if (name.endsWith("._S3rver_object")) out.push(`${rel}${name.slice(0, -"._S3rver_object".length)}`);
    }
  };
  walk(join(s3.dir, BUCKET, ...prefix.split("/").filter((p) => p)), prefix.replace(/\/?$/, "/").replace(/^\//, ""));
  return out.sort();
}

async function putObject(s3: TestS3Server, key: string, body: Buffer | string): Promise<void> {
  const r = await fetch(`${s3.endpoint}/${BUCKET}/${key}`, { method: "PUT", body: typeof body === "string" ? body : new Uint8Array(body) });
  expect(r.status).toBe(200);
}

async function getObject(s3: TestS3Server, key: string): Promise<Buffer | undefined> {
  const r = await fetch(`${s3.endpoint}/${BUCKET}/${key}`);
  if (r.status === 404) return undefined;
  expect(r.status).toBe(200);
  return Buffer.from(await r.arrayBuffer());
}

function descriptor(s3: TestS3Server, prefix: string, backend: Backend, endpoint = s3.endpoint): Json {
  return {
    kind: "s3",
    bucket: BUCKET,
    prefix,
    region: S3RVER_CLIENT_SETTINGS.region,
    endpoint,
    forcePathStyle: S3RVER_CLIENT_SETTINGS.forcePathStyle,
    checksums: S3RVER_CLIENT_SETTINGS.checksums,
    backend,
  };
}

/**
 * Credentials for s3rver: it knows the access key id S3RVER and checks no V4 signatures, so the
 * secret key and session token can be unique to a test, which makes a leak greppable.
 */
function testSecrets(): { aws: { accessKeyId: string; secretAccessKey: string; sessionToken: string } } {
  const tag = randomBytes(8).toString("hex");
  return { aws: { accessKeyId: TEST_AWS_CREDENTIALS.accessKeyId, secretAccessKey: `secret-${tag}-value`, sessionToken: `token-${tag}-value` } };
}

/**
 * Waits for the exit event (the agent writes it last). 100 s: the aws CLI v1 case starts Python for
 * every object, which takes a minute and more on 2 loaded cores.
 */
async function waitExit(run: Run, timeoutMs = 100_000): Promise<{ events: AgentEvent[]; exit: AgentEvent; log: string }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const events = readEvents(run.runDir);
    const exit = events.find((e) => e.type === "exit");
    if (exit) {
      expect(events[events.length - 1]).toBe(exit);
      expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
      return { events, exit, log: readText(join(run.runDir, "train.log")) };
    }
    if (Date.now() > deadline) throw new Error(`run ${run.runId} did not end; events: ${JSON.stringify(events)}; agent.log: ${readText(join(run.runDir, "agent.log"))}`);
    await sleep(50);
  }
}

/**
 * Samples the server's objects while a run commits: LATEST must always name a checkpoint whose
 * manifest exists, and every manifest must list objects that are already there in full.
 */
function bucketSampler(s3: TestS3Server, base: string): { stop: () => string[]; samples: () => number } {
  const violations: string[] = [];
  let samples = 0;
  const timer = setInterval(() => {
    samples++;
    try {
      const latest = readObject(s3, `${base}/LATEST`)?.toString("utf8").trim();
      if (latest && !listKeys(s3, `${base}/checkpoints/${latest}`).some((k) => /\/g\d+\/manifest\.json$/.test(k))) {
        if (readObject(s3, `${base}/LATEST`)?.toString("utf8").trim() === latest) violations.push(`LATEST=${latest} without a manifest`);
      }
      for (const key of listKeys(s3, `${base}/checkpoints`).filter((k) => k.endsWith("/manifest.json"))) {
        const raw = readObject(s3, key)?.toString("utf8");
        if (!raw) continue;
        let m: Manifest;
        try {
          m = JSON.parse(raw) as Manifest;
        } catch {
          continue; // s3rver writes in place: a manifest being written is not a manifest yet
        }
        for (const f of m.files) {
          if (!key.endsWith(`/${m.name}/${genName(m.seq)}/manifest.json`)) violations.push(`${key}: manifest says ${m.name} seq ${m.seq}`);
          const p = objectPath(s3, `${base}/checkpoints/${m.name}/${genName(m.seq)}/files/${f.path}`);
          const ok = existsSync(p) && statSync(p).size === f.size;
          if (!ok && readObject(s3, key)?.toString("utf8") === raw) violations.push(`${m.name}: manifest lists ${f.path} which is not stored`);
        }
      }
    } catch {
      // an object vanished between two reads: retention at work
    }
  }, 3);
  return {
    stop: () => {
      clearInterval(timer);
      return violations;
    },
    samples: () => samples,
  };
}

/** The manifest of a checkpoint's highest generation (the committed one). */
function manifestIn(s3: TestS3Server, base: string, name: string): Manifest {
  const keys = listKeys(s3, `${base}/checkpoints/${name}`).filter((k) => /\/g\d+\/manifest\.json$/.test(k)).sort();
  const key = keys[keys.length - 1];
  return JSON.parse((key === undefined ? undefined : readObject(s3, key)?.toString("utf8")) ?? "null") as Manifest;
}

/** Every stored object of a manifest has exactly the manifest's size and sha256. */
function expectStoredMatches(s3: TestS3Server, base: string, m: Manifest): void {
  expect(m.files.length).toBeGreaterThan(0);
  for (const f of m.files) {
    const data = readObject(s3, `${base}/checkpoints/${m.name}/${genName(m.seq)}/files/${f.path}`);
    expect(data, `${m.name}/${f.path}`).toBeDefined();
    expect(data?.length).toBe(f.size);
    expect(sha256(data ?? "")).toBe(f.sha256);
  }
  expect(m.totalBytes).toBe(m.files.reduce((a, f) => a + f.size, 0));
}

/** Every file below dir, recursively. */
function filesBelow(dir: string): string[] {
  const out: string[] = [];
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    const full = join(dir, name);
    const st = lstatSync(full);
    if (st.isDirectory()) out.push(...filesBelow(full));
    else if (st.isFile()) out.push(full);
  }
  return out;
}

/** A PATH whose only `aws` is the given one (the daemon finds the CLI on PATH). */
function pathWithAws(aws: string): string {
  const bin = join(tmp(), "bin");
  mkdirSync(bin);
  symlinkSync(aws, join(bin, "aws"));
  return `${bin}:/usr/bin:/bin`;
}

// Every aws process costs ~0.7 s of CPU, so each CLI is used by some tests, not all: the one on
// PATH (v1 from pip on this machine) and Debian's awscli package (v2), when they differ.
const DEBIAN_AWS = "/usr/bin/aws";
const PATH_AWS = spawnSync("sh", ["-c", "command -v aws"], { encoding: "utf8" }).stdout.trim();
const OTHER_AWS = existsSync(DEBIAN_AWS) && PATH_AWS !== DEBIAN_AWS ? DEBIAN_AWS : undefined;
// Debian's botocore predates the `request_checksum_calculation` setting (which s3rver needs as
// `when_required` from botocore 1.36 on); an interpreter with a newer boto3 tests that path too.
const NEW_BOTO_PY = ((): string | undefined => {
  const probe = "import botocore.config, boto3; print('request_checksum_calculation' in botocore.config.Config.OPTION_DEFAULTS)";
  for (const py of [PY, "python3"]) {
    const r = spawnSync(py, ["-c", probe], { encoding: "utf8" });
    if (r.status === 0 && r.stdout.trim() === "True") return py;
  }
  return undefined;
})();

// ---------------------------------------------------------------------------------------------

describe.concurrent("agent S3 storage", () => {
  const commitCases: Array<{ label: string; backend: Backend; aws?: string | undefined; python?: string }> = [
    { label: `boto3 (${SYSTEM_PY})`, backend: "boto3" },
    ...(NEW_BOTO_PY ? [{ label: `boto3 (${NEW_BOTO_PY}, botocore with checksum settings)`, backend: "boto3" as Backend, python: NEW_BOTO_PY }] : []),
    { label: `cli (${PATH_AWS || "aws"})`, backend: "cli" },
  ];
  const dataCases: Array<{ label: string; backend: Backend; aws?: string | undefined }> = [
    { label: "boto3", backend: "boto3" },
    { label: `cli (${OTHER_AWS ?? (PATH_AWS || "aws")})`, backend: "cli", aws: OTHER_AWS },
  ];

  test.each(commitCases)(
    "$label: checkpoints committed to S3 verify byte for byte, LATEST only after its manifest, retention; outputs uploaded; secrets never on disk, argv or env",
    async ({ backend, aws, python }) => {
      const s3 = shared;
      const prefix = `ck-${randomBytes(3).toString("hex")}/team`;
      const secrets = testSecrets();
      const script = [
        "import json, os, time",
        "ck = os.environ['RUNCTL_CHECKPOINT_DIR']",
        "out = os.environ['RUNCTL_OUTPUT_DIR']",
        "json.dump(dict(os.environ), open(os.path.join(out, 'trainer-env.json'), 'w'))",
        "os.makedirs(os.path.join(out, 'plots', 'loss'))",
        "open(os.path.join(out, 'plots', 'loss', 'curve.csv'), 'w').write('step,loss\\n1,0.5\\n')",
        "for i in range(1, 3):",
        "    d = os.path.join(ck, 'step-%08d' % i)",
        "    os.makedirs(os.path.join(d, 'sub'))",
        "    open(os.path.join(d, 'model.bin'), 'wb').write(os.urandom(300000 + i))",
        "    json.dump({'i': i}, open(os.path.join(d, 'sub', 'meta.json'), 'w'))",
        "    json.dump({'step': i * 10}, open(d + '.done', 'w'))",
        "    time.sleep(0.3)",
        "open(os.path.join(ck, 'last.pt'), 'wb').write(os.urandom(4321))",
        "print('trained', flush=True)",
      ].join("\n");
      const run = makeRun(script, {}, tmp(), S3_CHECKPOINTS);
      const storage = descriptor(s3, prefix, backend);
      run.spec["checkpoints"] = { dir: run.ckptDir, storage, keep: 2, settleMs: 30_000, pollMs: 50 };
      run.spec["outputs"] = { storage };
      const env = aws ? { ...process.env, PATH: pathWithAws(aws) } : process.env;
      const base = `${prefix}/${run.runId}`;
      const sampler = bucketSampler(s3, base);
      const pid = await launch(run, { python: python ?? SYSTEM_PY, secrets, env });

      // The daemon got the secrets through a pipe: not in its environment or command line, and its
      // stdin is /dev/null again.
      const environ = readFileSync(`/proc/${pid}/environ`).toString("utf8");
      const cmdline = readFileSync(`/proc/${pid}/cmdline`).toString("utf8");
      expect(cmdline.split("\0")).toContain("supervise");
      expect(readlinkSync(`/proc/${pid}/fd/0`)).toBe("/dev/null");
      const { events, exit, log } = await waitExit(run);
      expect(sampler.stop()).toEqual([]);
      expect(exit, readText(join(run.runDir, "agent.log"))).toMatchObject({ status: "succeeded", exitCode: 0, reason: "exit" });
      expect(log).toContain("trained");
      expect(log).toMatch(backend === "boto3" ? /checkpoint storage: s3:\/\/runctl-test\/ck-\w+\/team via boto3/ : /checkpoint storage: s3:\/\/runctl-test\/ck-\w+\/team via aws-cli\//);

      const commits = ofType(events, "checkpoint");
      expect(commits.map((e) => [e["name"], e["commitSeq"], e["step"]])).toEqual([
        ["step-00000001", 1, 10],
        ["step-00000002", 2, 20],
        ["last.pt", 3, null],
      ]);
      expect(commits[0]).toMatchObject({ files: 2, bytes: 300001 + 8, location: `s3://${BUCKET}/${base}/checkpoints/step-00000001/g00000001` });
      // s3rver deletes a DeleteObjects batch in parallel and its cleanup of emptied folders races
      // (rmdir vs readdir: a 500 InternalError now and then); the agent retries it like any 5xx.
      const s3rverDeleteRace = /InternalError\) when calling the DeleteObjects operation.*; retrying in/;
      expect(ofType(events, "warning").filter((w) => !s3rverDeleteRace.test(String(w["message"])))).toEqual([]);

      // Retention keep 2: only the two newest remain, manifests and files; LATEST names the newest.
      expect(listKeys(s3, `${base}/checkpoints`)).toEqual([
        `${base}/checkpoints/last.pt/g00000003/files/last.pt`,
        `${base}/checkpoints/last.pt/g00000003/manifest.json`,
        `${base}/checkpoints/step-00000002/g00000002/files/model.bin`,
        `${base}/checkpoints/step-00000002/g00000002/files/sub/meta.json`,
        `${base}/checkpoints/step-00000002/g00000002/manifest.json`,
      ]);
      // Read back over HTTP too.
      expect((await getObject(s3, `${base}/LATEST`))?.toString("utf8")).toBe("last.pt");
      const m2 = JSON.parse((await getObject(s3, `${base}/checkpoints/step-00000002/g00000002/manifest.json`))?.toString("utf8") ?? "null") as Manifest;
      expect(m2).toMatchObject({ runId: run.runId, name: "step-00000002", kind: "dir", step: 20, seq: 2 });
      expect(m2.files.map((f) => f.path)).toEqual(["model.bin", "sub/meta.json"]);
      expectStoredMatches(s3, base, m2);
      expect(readObject(s3, `${base}/checkpoints/step-00000002/g00000002/files/model.bin`)?.equals(readFileSync(join(run.ckptDir, "step-00000002", "model.bin")))).toBe(true);
      const mLast = manifestIn(s3, base, "last.pt");
      expect(mLast).toMatchObject({ kind: "file", seq: 3, files: [{ path: "last.pt", size: 4321 }] });
      expectStoredMatches(s3, base, mLast);

      // Outputs: every file below outputDir, then the `outputs` event, before `exit`.
      const outputs = ofType(events, "outputs");
      expect(outputs).toHaveLength(1);
      expect(outputs[0]).toMatchObject({ files: 2, failed: 0, location: `s3://${BUCKET}/${base}/outputs` });
      expect(events.indexOf(outputs[0] as AgentEvent)).toBe(events.length - 2);
      expect(listKeys(s3, `${base}/outputs`)).toEqual([`${base}/outputs/plots/loss/curve.csv`, `${base}/outputs/trainer-env.json`]);
      expect(readObject(s3, `${base}/outputs/plots/loss/curve.csv`)?.toString("utf8")).toBe("step,loss\n1,0.5\n");
      const trainerEnvBytes = readObject(s3, `${base}/outputs/trainer-env.json`) ?? Buffer.alloc(0);
      expect(outputs[0]?.["bytes"]).toBe(trainerEnvBytes.length + 16);

      // Secrets: in no file of the run (spec.json, events, logs, agent.log, the aws config), not in
      // the daemon's environment or command line, not in the trainer's environment.
      const values = [secrets.aws.secretAccessKey, secrets.aws.sessionToken];
      const trainerEnv = JSON.parse(trainerEnvBytes.toString("utf8")) as Record<string, string>;
      expect(Object.keys(trainerEnv).filter((k) => k.startsWith("AWS_")).sort()).toEqual(Object.keys(process.env).filter((k) => k.startsWith("AWS_")).sort());
      const files = filesBelow(run.root);
      expect(files).toContain(join(run.runDir, "agent.log"));
      expect(files).toContain(join(run.runDir, "spec.json"));
      if (backend === "cli") expect(files.some((f) => /aws-config-/.test(f))).toBe(true);
      for (const v of values) {
        for (const f of files) expect(readFileSync(f).includes(v), `${f} contains a secret`).toBe(false);
        expect(environ.includes(v)).toBe(false);
        expect(cmdline.includes(v)).toBe(false);
        expect(JSON.stringify(trainerEnv).includes(v)).toBe(false);
      }
      expect(JSON.parse(readText(join(run.runDir, "spec.json")))).not.toHaveProperty("secrets");
    },
  );

  test.each(dataCases)(
    "$label: resume from S3 falls back past a corrupted object; data downloads nested keys, verified, resumable, changed objects again",
    async ({ backend, aws }) => {
      const env = aws ? { ...process.env, PATH: pathWithAws(aws) } : process.env;
      const s3 = shared;
      const root = tmp();
      const prefix = `rs-${randomBytes(3).toString("hex")}`;
      const prev = "prev-run";
      const weights = (n: number): Buffer => Buffer.from(`weights of step ${n}\n`.repeat(300));
      // A previous run's checkpoints, written over HTTP in the documented layout; the newest one's
      // weights are then corrupted (same size, other bytes: only the sha256 can tell).
      for (const [seq, step] of [[1, 10], [2, 20], [3, 30]] as const) {
        const name = `step-${String(step).padStart(8, "0")}`;
        const files = { "weights.bin": weights(step), "opt/state.json": Buffer.from(`{"m":${step}}`) };
        const entries: ManifestFile[] = [];
        for (const [path, data] of Object.entries(files)) {
          await putObject(s3, `${prefix}/${prev}/checkpoints/${name}/${genName(seq)}/files/${path}`, data);
          entries.push({ path, size: data.length, sha256: sha256(data) });
        }
        const manifest = { version: 1, runId: prev, name, kind: "dir", step, seq, createdAt: new Date().toISOString(), hyperparamsHash: sha256("{}"), files: entries, totalBytes: entries.reduce((a, f) => a + f.size, 0) };
        await putObject(s3, `${prefix}/${prev}/checkpoints/${name}/${genName(seq)}/manifest.json`, JSON.stringify(manifest));
        await putObject(s3, `${prefix}/${prev}/LATEST`, name);
      }
      await putObject(s3, `${prefix}/${prev}/checkpoints/step-00000030/${genName(3)}/files/weights.bin`, weights(31));

      // A data set with nested keys (and a key that needs glob escaping for the CLI).
      const dataset: Record<string, Buffer> = {
        "train/images/a.bin": randomBytes(70_000),
        "train/images/b.bin": randomBytes(1000),
        "train/labels.csv": Buffer.from("a,1\nb,2\n"),
        "test/deep/er/c [1]*.bin": randomBytes(5000),
        "README.txt": Buffer.from("mnist-ish\n"),
      };
      for (const [key, data] of Object.entries(dataset)) await putObject(s3, `${prefix}/datasets/mnist/${key}`, data);
      await putObject(s3, `${prefix}/datasets/mnist-other/x.bin`, "not part of the prefix");

      const script = [
        "import hashlib, os",
        "p = os.environ.get('RUNCTL_RESUME_FROM')",
        "if p: print('resumed', os.path.basename(p), hashlib.sha256(open(os.path.join(p, 'weights.bin'), 'rb').read()).hexdigest())",
        "d = os.environ['RUNCTL_DATA_DIR']",
        "for dirpath, dirs, files in sorted(os.walk(d)):",
        "    for fn in sorted(files):",
        "        full = os.path.join(dirpath, fn)",
        "        print('data', os.path.relpath(full, d), hashlib.sha256(open(full, 'rb').read()).hexdigest())",
      ].join("\n");
      const dataTo = join(root, "code", "data");
      const mkRun = (resume = false): Run =>
        makeRun(
          script,
          {
            resume: resume ? { storage: descriptor(s3, prefix, backend), runId: prev, name: null } : null,
            data: [{ source: descriptor(s3, `${prefix}/datasets/mnist`, backend), to: dataTo }],
            dataDir: dataTo,
          },
          root,
          S3_CHECKPOINTS,
        );
      const dataLines = (log: string): string[] => log.split("\n").filter((l) => l.startsWith("data "));
      const expectedData = (ds: Record<string, Buffer>): string[] =>
        [`data .runctl-data.json`, ...Object.keys(ds).map((k) => `data ${k} ${sha256(ds[k] ?? "")}`)].sort();

      // 1: restores step-20 (step-30 is corrupt), downloads everything.
      const first = mkRun(true);
      await launch(first, { python: SYSTEM_PY, secrets: testSecrets(), env });
      const a = await waitExit(first);
      expect(a.exit, readText(join(first.runDir, "agent.log"))).toMatchObject({ status: "succeeded" });
      const warnings = ofType(a.events, "warning");
      expect(warnings).toHaveLength(1);
      expect(String(warnings[0]?.["message"])).toContain("step-00000030");
      expect(ofType(a.events, "checkpoint-restored")).toEqual([expect.objectContaining({ name: "step-00000020", step: 20, fromRunId: prev, path: join(first.ckptDir, "step-00000020") })]);
      expect(a.log).toContain(`resumed step-00000020 ${sha256(weights(20))}`);
      expect(readFileSync(join(first.ckptDir, "step-00000020", "opt", "state.json"), "utf8")).toBe('{"m":20}');
      expect(dataLines(a.log).map((l) => l.replace(/^(data \.runctl-data\.json).*/, "$1")).sort()).toEqual(expectedData(dataset));
      expect(a.log).toContain("(5 downloaded, 0 unchanged)");
      expect(a.log).toMatch(backend === "boto3" ? /data source: s3:\/\/runctl-test\/rs-\w+\/datasets\/mnist via boto3/ : /data source: s3:\/\/runctl-test\/rs-\w+\/datasets\/mnist via aws-cli\//);
      const state = JSON.parse(readText(join(dataTo, ".runctl-data.json"))) as Record<string, { size: number; etag: string }>;
      expect(Object.keys(state).sort()).toEqual(Object.keys(dataset).sort());
      expect(state["train/labels.csv"]).toMatchObject({ size: 8, etag: createHash("md5").update(dataset["train/labels.csv"] ?? "").digest("hex") });
      const mtimeOf = (k: string): number => statSync(join(dataTo, k)).mtimeMs;
      const mtimes = Object.fromEntries(Object.keys(dataset).map((k) => [k, mtimeOf(k)]));

      // 2: nothing changed: nothing downloaded.
      const second = mkRun();
      await launch(second, { python: SYSTEM_PY, secrets: testSecrets(), env });
      const b = await waitExit(second);
      expect(b.exit).toMatchObject({ status: "succeeded" });
      expect(b.log).toContain("(0 downloaded, 5 unchanged)");
      for (const k of Object.keys(dataset)) expect(mtimeOf(k)).toBe(mtimes[k]);

      // 3: one object changed, one added, one local copy edited (same size): only those are downloaded.
      const changed = { ...dataset, "train/images/b.bin": randomBytes(1200), "train/new.bin": randomBytes(10) };
      await putObject(s3, `${prefix}/datasets/mnist/train/images/b.bin`, changed["train/images/b.bin"] ?? "");
      await putObject(s3, `${prefix}/datasets/mnist/train/new.bin`, changed["train/new.bin"] ?? "");
      writeFileSync(join(dataTo, "README.txt"), "MNIST-ISH\n");
      const third = mkRun();
      await launch(third, { python: SYSTEM_PY, secrets: testSecrets(), env });
      const c = await waitExit(third);
      expect(c.exit).toMatchObject({ status: "succeeded" });
      expect(c.log).toContain("(3 downloaded, 3 unchanged)");
      expect(dataLines(c.log).map((l) => l.replace(/^(data \.runctl-data\.json).*/, "$1")).sort()).toEqual(expectedData(changed));
      for (const k of Object.keys(dataset).filter((k) => k !== "train/images/b.bin" && k !== "README.txt")) expect(mtimeOf(k)).toBe(mtimes[k]);

      // 4: an object whose bytes no longer match its ETag (s3rver keeps the MD5 beside the object):
      // the download fails verification, the run fails before training.
      const objFile = objectPath(s3, `${prefix}/datasets/mnist/train/images/a.bin`);
      const orig = readFileSync(objFile);
      writeFileSync(objFile, Buffer.concat([orig.subarray(0, 100), Buffer.from("X"), orig.subarray(101)]));
      rmSync(join(dataTo, ".runctl-data.json"));
      const fourth = mkRun();
      await launch(fourth, { python: SYSTEM_PY, secrets: testSecrets(), env });
      const d = await waitExit(fourth);
      expect(ofType(d.events, "error")).toEqual([expect.objectContaining({ code: "DATA_FAILED", message: expect.stringMatching(/a\.bin failed verification: MD5/) })]);
      expect(d.exit).toMatchObject({ status: "failed", reason: "data" });
      expect(d.events.some((e) => e.type === "phase" && e["phase"] === "training")).toBe(false);
      writeFileSync(objFile, orig);
    },
  );

  test("data: an object that would be written through a symlink out of `to` is refused (DATA_FAILED), nothing written outside", async () => {
    const s3 = shared;
    const root = tmp();
    const prefix = `esc-${randomBytes(3).toString("hex")}`;
    await putObject(s3, `${prefix}/ok.txt`, "fine");
    await putObject(s3, `${prefix}/link/evil.txt`, "escaped");
    const outside = join(root, "outside");
    mkdirSync(outside);
    const to = join(root, "code", "data");
    mkdirSync(to, { recursive: true });
    symlinkSync(outside, join(to, "link"));
    const run = makeRun("print('trained')\n", { data: [{ source: descriptor(s3, prefix, "boto3"), to }], dataDir: to }, root, S3_CHECKPOINTS);
    await launch(run, { python: SYSTEM_PY, secrets: testSecrets() });
    const { events, exit } = await waitExit(run);
    expect(ofType(events, "error")).toEqual([expect.objectContaining({ code: "DATA_FAILED", message: expect.stringContaining("symlink") })]);
    expect(exit).toMatchObject({ status: "failed", reason: "data" });
    expect(readdirSync(outside)).toEqual([]);
  });

  test("a checkpoint storage that refuses the listing (no such bucket) fails the run before data and training: STORAGE_UNREACHABLE", async () => {
    const root = tmp();
    const run = makeRun("open('trained.txt', 'w').write('x')\n", {}, root, S3_CHECKPOINTS);
    const storage = { ...descriptor(shared, "x", "boto3"), bucket: "no-such-bucket" };
    run.spec["checkpoints"] = { dir: run.ckptDir, storage, keep: null, settleMs: 100, pollMs: 50 };
    run.spec["data"] = [{ source: descriptor(shared, "never-listed", "boto3"), to: join(run.runDir, "data") }];
    await launch(run, { python: SYSTEM_PY, secrets: testSecrets() });
    const { events, exit } = await waitExit(run);
    expect(ofType(events, "error")).toEqual([
      expect.objectContaining({ code: "STORAGE_UNREACHABLE", message: expect.stringMatching(/checkpoint storage s3:\/\/no-such-bucket\/x\/run-\w+ cannot be read: .*NoSuchBucket/) }),
    ]);
    expect(exit).toMatchObject({ status: "failed", reason: "storage" });
    expect(events.filter((e) => e.type === "phase").map((e) => e["phase"])).toEqual([]);
    expect(existsSync(join(run.code, "trained.txt"))).toBe(false);
  });

  test("no usable client: STORAGE_UNREACHABLE with what to install, before training (cli without aws, boto3 not importable, auto with neither)", async () => {
    const s3 = shared;
    const root = tmp();
    const emptyBin = join(root, "empty-bin");
    mkdirSync(emptyBin);
    // An interpreter that cannot import boto3: a package of that name that refuses to load.
    const noBoto = join(root, "no-boto");
    mkdirSync(join(noBoto, "boto3"), { recursive: true });
    writeFileSync(join(noBoto, "boto3", "__init__.py"), "raise ImportError('boto3 is blocked in this test')\n");
    const cases: Array<{ backend: string; env: NodeJS.ProcessEnv; where: "checkpoints" | "data" | "outputs"; message: RegExp }> = [
      { backend: "cli", env: { ...process.env, PATH: emptyBin }, where: "checkpoints", message: /backend cli.*no `aws` on PATH.*apt-get install awscli/ },
      { backend: "boto3", env: { ...process.env, PYTHONPATH: noBoto }, where: "data", message: /backend boto3.*cannot import it.*boto3 is blocked.*pip install boto3/ },
      { backend: "auto", env: { ...process.env, PYTHONPATH: noBoto, PATH: emptyBin }, where: "outputs", message: /needs boto3.*or the aws CLI.*pip install boto3.*apt-get install awscli.*\.setup\(\{ commands/ },
    ];
    const runs = await Promise.all(
      cases.map(async (c) => {
        const run = makeRun("open('trained.txt', 'w').write('x')\n", {}, root, S3_CHECKPOINTS);
        const desc = descriptor(s3, "unreachable", c.backend as Backend);
        if (c.where === "checkpoints") run.spec["checkpoints"] = { dir: run.ckptDir, storage: desc, keep: null, settleMs: 100, pollMs: 50 };
        if (c.where === "data") run.spec["data"] = [{ source: desc, to: join(run.runDir, "data") }];
        if (c.where === "outputs") run.spec["outputs"] = { storage: desc };
        await launch(run, { python: SYSTEM_PY, env: c.env });
        return run;
      }),
    );
    for (const [i, run] of runs.entries()) {
      const c = cases[i];
      if (!c) throw new Error("unreachable");
      const { events, exit } = await waitExit(run);
      const errors = ofType(events, "error");
      expect(errors).toEqual([expect.objectContaining({ code: "STORAGE_UNREACHABLE" })]);
      expect(String(errors[0]?.["message"])).toMatch(c.message);
      expect(exit).toMatchObject({ status: "failed", reason: "storage", exitCode: null });
      expect(events.some((e) => e.type === "phase" && e["phase"] === "training")).toBe(false);
      expect(existsSync(join(run.code, "trained.txt"))).toBe(false);
    }
  });
});

describe.concurrent("agent S3 storage outages", () => {
  test.each(["boto3", "cli"] as const)(
    "%s: the server is killed while a 20 MB checkpoint commits and restarted 3 s later: the commit completes, LATEST never names a manifest-less checkpoint",
    async (backend) => {
      const s3 = await startS3Server({ buckets: [BUCKET] });
      try {
        const prefix = "outage";
        const script = [
          "import json, os, time",
          "ck = os.environ['RUNCTL_CHECKPOINT_DIR']",
          "def save(name, sizes):",
          "    d = os.path.join(ck, name)",
          "    os.makedirs(d)",
          "    for i, n in enumerate(sizes):",
          "        open(os.path.join(d, 'part-%d.bin' % i), 'wb').write(os.urandom(n))",
          "    open(d + '.done', 'w').write('{}')",
          "save('step-00000001', [1000])",
          "while not os.path.exists(os.path.join(ck, '.go')): time.sleep(0.02)",
          "save('step-00000002', [8 << 20, 6 << 20, 6 << 20])",
          "print('saved big', flush=True)",
        ].join("\n");
        const run = makeRun(script, {}, tmp(), S3_CHECKPOINTS);
        run.spec["checkpoints"] = { dir: run.ckptDir, storage: descriptor(s3, prefix, backend), keep: null, settleMs: 30_000, pollMs: 50 };
        const base = `${prefix}/${run.runId}`;
        const sampler = bucketSampler(s3, base);
        await launch(run, { python: SYSTEM_PY, secrets: testSecrets() });
        // The small checkpoint first, so LATEST exists while the big one commits.
        const deadline = Date.now() + 30_000;
        while (readObject(s3, `${base}/LATEST`)?.toString("utf8") !== "step-00000001") {
          if (Date.now() > deadline) throw new Error(`no first commit: ${readText(join(run.runDir, "events.jsonl"))}`);
          await sleep(20);
        }
        writeFileSync(join(run.ckptDir, ".go"), ""); // hidden: not a checkpoint
        // Kill the server as soon as the big checkpoint's first object lands: the rest is unsent.
        const first = objectPath(s3, `${base}/checkpoints/step-00000002/g00000002/files/part-0.bin`);
        while (!existsSync(first)) {
          if (Date.now() > deadline) throw new Error(`the big commit never started: ${readText(join(run.runDir, "events.jsonl"))}`);
          await sleep(2);
        }
        await s3.kill();
        expect(existsSync(objectPath(s3, `${base}/checkpoints/step-00000002/g00000002/manifest.json`))).toBe(false);
        await sleep(3000);
        await s3.restart();
        const { events, exit } = await waitExit(run);
        expect(sampler.stop()).toEqual([]);
        expect(sampler.samples()).toBeGreaterThan(100);
        expect(exit, readText(join(run.runDir, "agent.log"))).toMatchObject({ status: "succeeded" });
        // Each failed attempt was a warning; the commit itself then succeeded.
        const warnings = ofType(events, "warning").map((e) => String(e["message"]));
        expect(warnings.length).toBeGreaterThan(0);
        for (const w of warnings) expect(w).toMatch(/^S3 (upload to|download of|listing of) s3:\/\/.*\(attempt \d+\); retrying in/);
        expect(ofType(events, "checkpoint").map((e) => [e["name"], e["commitSeq"], e["bytes"]])).toEqual([
          ["step-00000001", 1, 1000],
          ["step-00000002", 2, 20 << 20],
        ]);
        expect(readObject(s3, `${base}/LATEST`)?.toString("utf8")).toBe("step-00000002");
        const m = manifestIn(s3, base, "step-00000002");
        expect(m.files.map((f) => f.path)).toEqual(["part-0.bin", "part-1.bin", "part-2.bin"]);
        expectStoredMatches(s3, base, m);
      } finally {
        await s3.stop();
      }
    },
  );
});

describe("agent S3 checkpoint rewrites (issue 10, item 2)", () => {
  /**
   * A trainer that saves best/ as files of `first` sizes (step 1), waits for `<checkpoints>/.go`, then
   * saves best/ again (step 2: marker off, rewrite, marker on) as files of `second` sizes, and sleeps.
   * Launched with boto3 storage under `prefix` (reached through `endpoint`); resolves once the first
   * version is committed.
   */
  async function launchRewrite(prefix: string, first: number[], second: number[], endpoint = shared.endpoint): Promise<{ run: Run; base: string; agentPid: number }> {
    const script = [
      "import json, os, time",
      "ck = os.environ['RUNCTL_CHECKPOINT_DIR']",
      "open('trainer.pid', 'w').write(str(os.getpid()))",
      "d = os.path.join(ck, 'best')",
      "def save(step, sizes):",
      "    os.makedirs(d, exist_ok=True)",
      "    for i, n in enumerate(sizes):",
      "        open(os.path.join(d, 'part-%d.bin' % i), 'wb').write(os.urandom(n))",
      "    open(d + '.done', 'w').write(json.dumps({'step': step}))",
      `save(1, ${JSON.stringify(first)})`,
      "while not os.path.exists(os.path.join(ck, '.go')): time.sleep(0.02)",
      "os.unlink(d + '.done')",
      `save(2, ${JSON.stringify(second)})`,
      "time.sleep(60)",
    ].join("\n");
    const run = makeRun(script, {}, tmp(), S3_CHECKPOINTS);
    run.spec["checkpoints"] = { dir: run.ckptDir, storage: descriptor(shared, prefix, "boto3", endpoint), keep: null, settleMs: 30_000, pollMs: 20 };
    const base = `${prefix}/${run.runId}`;
    const agentPid = await launch(run, { python: SYSTEM_PY, secrets: testSecrets() });
    const deadline = Date.now() + 30_000;
    while (readObject(shared, `${base}/LATEST`)?.toString("utf8") !== "best") {
      if (Date.now() > deadline) throw new Error(`no first commit: ${readText(join(run.runDir, "events.jsonl"))}`);
      await sleep(20);
    }
    return { run, base, agentPid };
  }

  function killAgentAndTrainer(run: Run, agentPid: number): void {
    process.kill(agentPid, "SIGKILL");
    process.kill(Number(readText(join(run.code, "trainer.pid"))), "SIGKILL");
  }

  /** What every reader sees after the kill: the first version only, LATEST naming it, verified byte for byte. */
  async function expectOnlyTheFirstVersion(prefix: string, run: Run, base: string, totalBytes: number): Promise<void> {
    expect(readObject(shared, `${base}/LATEST`)?.toString("utf8")).toBe("best");
    const store = checkpointStore(s3Storage(`s3://${BUCKET}/${prefix}`, { endpoint: shared.endpoint, ...S3RVER_CLIENT_SETTINGS, credentials: TEST_AWS_CREDENTIALS }), run.runId);
    const latest = await store.latest();
    expect(latest).toMatchObject({ name: "best", step: 1, seq: 1, totalBytes });
    expect(await latest!.verify()).toEqual({ ok: true, problems: [] });
    expect((await store.list()).map((c) => [c.name, c.seq])).toEqual([["best", 1]]);
  }

  test("boto3: the agent is SIGKILLed while a rewrite of best/ uploads: the committed version stays latest() and verifies, LATEST names it", async () => {
    const prefix = `rw-${randomBytes(3).toString("hex")}`;
    const { run, base, agentPid } = await launchRewrite(prefix, [1000, 2000], [7 << 20, 7 << 20, 7 << 20]);
    const firstCommitAt = Date.now();
    writeFileSync(join(run.ckptDir, ".go"), "");
    // The rewrite's upload has started once an object under best/ is newer than the first commit.
    const root = join(shared.dir, BUCKET, ...base.split("/"), "checkpoints", "best");
    const newer = (dir: string): boolean =>
      existsSync(dir) && readdirSync(dir).some((n) => (lstatSync(join(dir, n)).isDirectory() ? newer(join(dir, n)) : n.endsWith("._S3rver_object") && statSync(join(dir, n)).mtimeMs > firstCommitAt + 5));
    const deadline = Date.now() + 30_000;
    while (!newer(root)) {
      if (Date.now() > deadline) throw new Error(`the rewrite never started uploading: ${readText(join(run.runDir, "events.jsonl"))}`);
      await sleep(2);
    }
    killAgentAndTrainer(run, agentPid);
    await expectOnlyTheFirstVersion(prefix, run, base, 3000);
  });

  test("boto3: the agent is SIGKILLed between the parts of a > 64 MiB file's streamed multipart upload: nothing new is visible, the committed version verifies", async () => {
    const prefix = `rw-big-${randomBytes(3).toString("hex")}`;
    // 160 MiB: above the agent's multipart threshold, so boto3 uploads it in 10 parts of 16 MiB, 4 at
    // a time, while it reads it; the kill comes right after the first part is stored.
    const { run, base, agentPid } = await launchRewrite(prefix, [1000], [160 << 20]);
    // s3rver keeps a pending multipart upload's parts in <bucket>/._S3rver_uploads/<id>/<n>, with
    // <n>.md5 once part n is stored; uploads of other tests running beside this one have other keys.
    const uploads = join(shared.dir, BUCKET, "._S3rver_uploads");
    const ours = (): string[] => (existsSync(uploads) ? readdirSync(uploads).filter((id) => readText(join(uploads, id, "key")).startsWith(`${base}/`)) : []);
    const before = new Set(ours());
    writeFileSync(join(run.ckptDir, ".go"), "");
    const deadline = Date.now() + 60_000;
    let upload: string | undefined;
    while (upload === undefined) {
      if (Date.now() > deadline) throw new Error(`the rewrite's multipart upload never stored a part: ${readText(join(run.runDir, "events.jsonl"))}`);
      upload = ours().find((id) => !before.has(id) && readdirSync(join(uploads, id)).some((n) => n.endsWith(".md5")));
      if (upload === undefined) await sleep(2);
    }
    killAgentAndTrainer(run, agentPid);
    // Killed between parts: the upload was never completed (its last part, 10, was not stored).
    expect(readdirSync(join(uploads, upload)), "the upload finished before the kill").not.toContain("10.md5");
    await expectOnlyTheFirstVersion(prefix, run, base, 1000);
  });

  test("boto3: the agent is SIGKILLed after the last multipart upload of a rewrite completed, right before its manifest: nothing new is visible, the committed version verifies", async () => {
    const prefix = `rw-gate-${randomBytes(3).toString("hex")}`;
    // Every request goes through a proxy that kills the agent and trainer when the rewrite's manifest
    // PUT arrives, before forwarding it: every file of generation 2 is stored, its manifest never is.
    let launched: { run: Run; agentPid: number } | undefined;
    const proxy = await startHttpGateProxy(
      shared.endpoint,
      (req) => req.method === "PUT" && /\/checkpoints\/best\/g00000002\/manifest\.json(\?|$)/.test(req.url ?? ""),
      () => killAgentAndTrainer(launched!.run, launched!.agentPid),
    );
    try {
      // 80 MiB: above the agent's multipart threshold (5 parts of 16 MiB), then a small file.
      const { run, base, agentPid } = await launchRewrite(prefix, [1000], [80 << 20, 5000], proxy.endpoint);
      launched = { run, agentPid };
      writeFileSync(join(run.ckptDir, ".go"), "");
      const deadline = Date.now() + 60_000;
      while (proxy.gated.length === 0) {
        if (Date.now() > deadline) throw new Error(`the rewrite never wrote its manifest: ${readText(join(run.runDir, "events.jsonl"))}`);
        await sleep(10);
      }
      expect(proxy.gated).toHaveLength(1);
      // The kill point: both files of generation 2 whole in the bucket (the multipart upload completed), no manifest.
      const gen2 = `${base}/checkpoints/best/g00000002`;
      expect(listKeys(shared, gen2)).toEqual([`${gen2}/files/part-0.bin`, `${gen2}/files/part-1.bin`]);
      expect(readObject(shared, `${gen2}/files/part-0.bin`)?.length).toBe(80 << 20);
      await expectOnlyTheFirstVersion(prefix, run, base, 1000);
    } finally {
      await proxy.stop();
    }
  });
});

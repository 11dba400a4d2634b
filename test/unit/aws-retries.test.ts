import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ebsVolumes, ssmTransport, sweepEc2 } from "runctl/aws";
import { caught } from "../support/caught.js";

// A real HTTP server on loopback standing in for the EC2 endpoint: every request is answered with
// AWS's real throttling error. It counts HTTP requests, which is what the retry bound is about.
const THROTTLED = `<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>0f6a6b5e-0000-4000-8000-000000000000</RequestID></Response>`;

let server: Server;
let requests: string[] = [];
const saved: Record<string, string | undefined> = {};

function actionOf(req: IncomingMessage, body: string): string {
  const target = req.headers["x-amz-target"];
  if (typeof target === "string") return target.split(".").pop() ?? target; // SSM (JSON protocol)
  return new URLSearchParams(body).get("Action") ?? req.url ?? "?";
}

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString("utf8")));
    req.on("end", () => {
      const action = actionOf(req, body);
      requests.push(action);
      if (req.headers["x-amz-target"]) {
        // SSM: a 500 after which nobody knows whether the command started.
        res.writeHead(500, { "content-type": "application/x-amz-json-1.1", "x-amzn-errortype": "InternalServerError" }).end(JSON.stringify({ __type: "InternalServerError", message: "Internal error" }));
        return;
      }
      res.writeHead(503, { "content-type": "text/xml" }).end(THROTTLED);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const env = {
    AWS_ENDPOINT_URL_EC2: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    AWS_ENDPOINT_URL_SSM: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    AWS_ACCESS_KEY_ID: "AKIDEXAMPLE",
    AWS_SECRET_ACCESS_KEY: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
  };
  for (const [k, v] of Object.entries(env)) {
    saved[k] = process.env[k];
    process.env[k] = v;
  }
});

afterAll(async () => {
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

describe("AWS calls under throttling (one retry policy, SDK retries off)", () => {
  it("an EBS call makes exactly retries + 1 HTTP requests, then fails with a retryable CLOUD_ERROR", async () => {
    requests = [];
    const volumes = ebsVolumes({ region: "us-east-1", retry: { retries: 2, minDelayMs: 1, maxDelayMs: 2 } });
    const err = await caught(volumes.describe("vol-0123456789abcdef0"));
    expect(err.code).toBe("CLOUD_ERROR");
    expect(err.retryable).toBe(true);
    expect(err.details["awsCode"]).toBe("RequestLimitExceeded");
    // Before: the SDK's own retries (3 attempts by default) ran inside each of runctl's: 9 requests.
    expect(requests).toEqual(["DescribeVolumes", "DescribeVolumes", "DescribeVolumes"]);
  });

  it("a sweep's Describe call is bounded the same way", async () => {
    requests = [];
    const err = await caught(sweepEc2({ region: "us-east-1", owner: "all", dryRun: true, retry: { retries: 1, minDelayMs: 1, maxDelayMs: 2 }, runEnded: () => undefined }));
    expect(err.code).toBe("CLOUD_ERROR");
    expect(requests).toEqual(["DescribeInstances", "DescribeInstances"]);
  });

  it("SendCommand that failed with a 5xx is sent once: neither the SDK nor runctl repeats it (the command must not run twice)", async () => {
    requests = [];
    const t = ssmTransport({ instanceId: "i-0123456789abcdef0", region: "us-east-1" });
    const err = await caught((async () => await t.exec({ script: "echo hi" }))());
    expect(err.code).toBe("CLOUD_ERROR");
    // Before: the SDK client ran adaptive retries (maxAttempts 10) under runctl's: 10 SendCommands.
    expect(requests.filter((r) => r === "SendCommand")).toEqual(["SendCommand"]);
    await t.close();
  });
});

import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { localTransport, type LogEntry } from "runctl";
import { loggedTransport } from "../../src/transport/logged-transport.js";
import { sourceLogger } from "../../src/util/logger.js";
import { tempDir } from "../support/temp-home.js";

const SECRET = "tok_logger_unit_secret_41f7";

describe("the logger option", () => {
  it("a logged transport reports each command with its exit code, env names only, and never stdin", async () => {
    const entries: LogEntry[] = [];
    const t = loggedTransport(localTransport(), sourceLogger((e) => entries.push(e), "transport"));
    const r = await t.exec(["sh", "-c", 'read line; test "$line" = "$TOKEN" && echo same'], { env: { TOKEN: SECRET }, stdin: `${SECRET}\n` });
    expect(r.stdout.trim()).toBe("same"); // the command got both; the log gets neither
    const failed = await t.exec({ script: "exit 3" });
    expect(failed.exitCode).toBe(3);
    const dir = tempDir("logger");
    writeFileSync(join(dir, "a.txt"), "hello");
    await t.putFile(join(dir, "a.txt"), join(dir, "b.txt"));
    expect(readFileSync(join(dir, "b.txt"), "utf8")).toBe("hello");
    const messages = entries.map((e) => e.message);
    expect(entries.every((e) => e.source === "transport" && e.level === "debug")).toBe(true);
    expect(messages.some((m) => m.includes(": exec sh -c ") && m.includes("(env TOKEN)"))).toBe(true);
    expect(messages.some((m) => / exit 0 in \d+ ms: sh -c /.test(m))).toBe(true);
    expect(messages.some((m) => / exit 3 in \d+ ms: sh -c /.test(m) && m.includes("exit 3'"))).toBe(true);
    expect(messages.some((m) => m.includes(`put ${join(dir, "a.txt")} -> ${join(dir, "b.txt")}`))).toBe(true);
    expect(messages.some((m) => m.includes("put done in"))).toBe(true);
    expect(JSON.stringify(entries)).not.toContain(SECRET);
    // Everything else of the transport is the transport's own.
    expect(t.host).toBe(localTransport().host);
  });

  it("methods per level get a prefixed line (console fits); missing levels and throwing loggers are dropped", () => {
    const lines: string[] = [];
    const log = sourceLogger({ info: (line: string) => lines.push(line) }, "provider");
    log.info("leased gpu-1", { host: "gpu-1" });
    log.debug("not shown: no debug method");
    expect(lines).toEqual(["[runctl provider] leased gpu-1"]);
    const broken = sourceLogger(() => {
      throw new Error("logger broke");
    }, "agent");
    expect(() => broken.error("still fine")).not.toThrow();
    expect(sourceLogger(undefined, "engine").enabled).toBe(false);
    const plain = localTransport();
    expect(loggedTransport(plain, sourceLogger(undefined, "transport"))).toBe(plain); // silent: no wrapper at all
  });
});

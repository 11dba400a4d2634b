import { describe, expect, it } from "vitest";
import { startS3Server } from "../support/s3-server.js";

describe("test S3 server", () => {
  it("starts, answers, restarts with objects intact", async () => {
    const s3 = await startS3Server({ buckets: ["smoke"] });
    try {
      const put = await fetch(`${s3.endpoint}/smoke/a.txt`, { method: "PUT", body: "hello" });
      expect(put.status).toBe(200);
      await s3.kill();
      await expect(fetch(`${s3.endpoint}/smoke/a.txt`)).rejects.toThrow();
      await s3.restart();
      expect(await (await fetch(`${s3.endpoint}/smoke/a.txt`)).text()).toBe("hello");
    } finally {
      await s3.stop();
    }
  });
});

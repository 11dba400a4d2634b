import { afterAll, beforeAll } from "vitest";
import { startS3Server, type TestS3Server } from "./s3-server.js";

/**
 * One s3rver for the calling test file: started in `beforeAll`, stopped in `afterAll`. The returned
 * object reads through to it, so use it inside tests and hooks only.
 */
export function useS3Server(options: Parameters<typeof startS3Server>[0] = {}): TestS3Server {
  let started: TestS3Server | undefined;
  const get = (): TestS3Server => {
    if (!started) throw new Error("the test S3 server starts in beforeAll: use it inside tests and hooks");
    return started;
  };
  beforeAll(async () => {
    started = await startS3Server(options);
  });
  afterAll(async () => {
    await started?.stop();
  });
  return {
    get endpoint() {
      return get().endpoint;
    },
    get address() {
      return get().address;
    },
    get port() {
      return get().port;
    },
    get dir() {
      return get().dir;
    },
    get buckets() {
      return get().buckets;
    },
    get pid() {
      return get().pid;
    },
    kill: () => get().kill(),
    restart: () => get().restart(),
    stop: () => get().stop(),
  };
}

import { describe, expect, it } from "vitest";
import { main as digits } from "../../examples/digits-pytorch.js";
import { tempDir, useTempRunctlHome } from "../support/temp-home.js";

useTempRunctlHome("e2e-digits");

describe("a real PyTorch model on scikit-learn's digits (local)", () => {
  it("trains to over 90% test accuracy and commits a checkpoint that verifies", async () => {
    const { result, accuracy, latest } = await digits({ checkpointDir: tempDir("digits-ckpt"), verbose: false });
    expect(result.status).toBe("succeeded");
    expect(accuracy).toBeGreaterThan(0.9);
    expect(latest).toBeDefined();
    expect((await latest!.verify()).ok).toBe(true);
    expect(latest!.manifest.files.some((f) => f.path.endsWith(".pt"))).toBe(true);
  }, 240_000);
});

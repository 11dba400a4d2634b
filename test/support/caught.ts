import { expect } from "vitest";
import { RunctlError } from "runctl";

/** Awaits a promise that must reject with a RunctlError, and returns that error for more checks. */
export async function caught(promise: Promise<unknown>): Promise<RunctlError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(RunctlError);
    return err as RunctlError;
  }
  throw new Error("expected a rejection");
}

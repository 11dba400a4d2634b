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

/** Expects `promise` to reject with a RunctlError of `code`; returns it for more checks. */
export async function rejection(promise: PromiseLike<unknown>, code: string): Promise<RunctlError> {
  try {
    await promise;
  } catch (err) {
    expect(err, String(err)).toBeInstanceOf(RunctlError);
    expect((err as RunctlError).code, (err as Error).message).toBe(code);
    return err as RunctlError;
  }
  throw new Error(`expected a ${code} rejection, but it resolved`);
}

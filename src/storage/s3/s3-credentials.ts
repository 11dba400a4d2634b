import type { S3Client } from "@aws-sdk/client-s3";
import { RunctlError, throwIfAborted } from "../../errors/runctl-error.js";
import { classifyS3Error } from "./s3-errors.js";
import type { AwsCredentialIdentity } from "./s3-options.js";

/**
 * Resolves the credentials of `client` now, for the agent on a machine (STORAGE_ERROR naming the
 * bucket when there are none; ABORTED when `signal` fires first).
 *
 * @example
 * ```ts
 * const creds = await resolveClientCredentials(client, "ml-ckpt", signal);
 * ```
 */
export async function resolveClientCredentials(client: S3Client, bucket: string, signal: AbortSignal | undefined): Promise<AwsCredentialIdentity> {
  throwIfAborted(signal);
  let creds: AwsCredentialIdentity;
  let onAbort: (() => void) | undefined;
  try {
    const resolving = client.config.credentials();
    creds = signal
      ? await Promise.race([
          resolving,
          new Promise<never>((_, reject) => {
            onAbort = () => reject(new RunctlError("ABORTED", "Resolving AWS credentials was aborted.", { cause: signal.reason }));
            signal.addEventListener("abort", onAbort, { once: true });
          }),
        ])
      : await resolving;
  } catch (err) {
    if (err instanceof RunctlError) throw err;
    const facts = classifyS3Error(err);
    throw new RunctlError(
      "STORAGE_ERROR",
      `Could not resolve AWS credentials to hand to the machine for s3://${bucket}${facts.code ? ` (${facts.code})` : ""}. Configure credentials for this process, or pass forwardCredentials: false to let the machine use its own (an instance profile).`,
      { cause: err, details: { operation: "resolve credentials", bucket } },
    );
  } finally {
    if (onAbort) signal?.removeEventListener("abort", onAbort);
  }
  return creds;
}

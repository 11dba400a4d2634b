import { isRunctlError } from "../../errors/runctl-error.js";
import type { Storage } from "../../storage/types.js";
import type { DoctorCheck } from "../../util/doctor-check.js";

/**
 * The doctor's check of a storage failure (a small list from this process failed): its code, and a
 * fix by the AWS code when there is one (a missing bucket, a refused permission, bad credentials).
 *
 * @example
 * ```ts
 * storageFailureCheck("s3://ckpt/runs", err).fix; // "Allow s3:ListBucket on the bucket ..." for AccessDenied
 * ```
 */
export function storageFailureCheck(uri: string, err: unknown): DoctorCheck {
  const base = { id: "storage", title: `storage ${uri} reachable from here`, status: "fail" as const, detail: err instanceof Error ? err.message : String(err) };
  if (!isRunctlError(err)) return base;
  const awsCode = typeof err.details["awsCode"] === "string" ? err.details["awsCode"] : undefined;
  const code = awsCode ?? err.code;
  if (awsCode === "NoSuchBucket") return { ...base, code, fix: "Check the bucket name (and region); create the bucket if it should exist." };
  if (awsCode === "AccessDenied" || awsCode === "Forbidden" || err.details["httpStatus"] === 403) {
    return { ...base, code, fix: "Allow s3:ListBucket on the bucket and s3:GetObject/PutObject/DeleteObject on its objects (statements S3ListBucket and S3Objects of docs/iam-policy.json; see docs/guides/iam.md)." };
  }
  if (awsCode && /InvalidAccessKeyId|SignatureDoesNotMatch|ExpiredToken|InvalidToken|CredentialsProviderError/.test(awsCode)) {
    return { ...base, code, fix: "Check the AWS credentials (aws configure, AWS_PROFILE, the environment variables)." };
  }
  return { ...base, code, fix: "Check that the storage is reachable from this machine (the endpoint, the network, the folder's permissions)." };
}

/**
 * Lists at most one object of the storage from this process: proves the bucket (or folder) is there
 * and readable with this process's credentials. Reads nothing else and writes nothing.
 *
 * @example
 * ```ts
 * const check = await storageCheck(s3("s3://ckpt/runs"));
 * ```
 */
export async function storageCheck(storage: Storage, signal?: AbortSignal): Promise<DoctorCheck> {
  try {
    let any = false;
    for await (const _ of storage.list("", signal ? { signal } : {})) {
      any = true;
      break;
    }
    return { id: "storage", title: `storage ${storage.uri} reachable from here`, status: "ok", detail: any ? "listed (has objects)" : "listed (empty)" };
  } catch (err) {
    if (signal?.aborted) throw err;
    return storageFailureCheck(storage.uri, err);
  }
}

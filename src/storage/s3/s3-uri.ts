import { RunctlError } from "../../errors/runctl-error.js";
import { validateStorageKey } from "../storage-key.js";

/**
 * A parsed `s3://bucket/prefix` URI.
 *
 * @example
 * ```ts
 * const { bucket, prefix } = parseS3Uri("s3://ml-ckpt/runs"); // "ml-ckpt", "runs"
 * ```
 */
export interface S3Location {
  /** Bucket name (validated against S3's naming rules). */
  readonly bucket: string;
  /** Key prefix without leading or trailing `/`; `""` for the bucket root. */
  readonly prefix: string;
  /** The normalized URI: `s3://bucket` or `s3://bucket/prefix`. */
  readonly uri: string;
}

/**
 * Parses and validates an `s3://bucket/optional/prefix` URI. Nothing is contacted.
 *
 * The bucket must follow S3's general-purpose naming rules (3–63 characters of lowercase letters,
 * digits, `.` and `-`, starting and ending with a letter or digit, no `..`, not an IP address). The
 * prefix follows the storage key rules of {@link validateStorageKey} (no `..`, `.` or empty parts, no
 * backslash, no NUL); one trailing `/` is dropped.
 *
 * @throws RunctlError `INVALID_URI` naming what is wrong.
 * @example
 * ```ts
 * parseS3Uri("s3://ml-ckpt/team/runs/"); // { bucket: "ml-ckpt", prefix: "team/runs", uri: "s3://ml-ckpt/team/runs" }
 * parseS3Uri("s3://Bad_Bucket");        // throws INVALID_URI
 * ```
 */
export function parseS3Uri(uri: string): S3Location {
  const bad = (why: string): never => {
    throw new RunctlError("INVALID_URI", `Invalid S3 URI ${JSON.stringify(uri)}: ${why}. Expected s3://bucket or s3://bucket/prefix.`, {
      details: { uri },
    });
  };
  if (typeof uri !== "string") bad("it is not a string");
  if (!uri.startsWith("s3://")) bad("it does not start with s3://");
  const rest = uri.slice("s3://".length);
  const slash = rest.indexOf("/");
  const bucket = slash === -1 ? rest : rest.slice(0, slash);
  let prefix = slash === -1 ? "" : rest.slice(slash + 1);
  const bucketProblem = s3BucketNameProblem(bucket);
  if (bucketProblem) bad(`bucket ${JSON.stringify(bucket)} ${bucketProblem}`);
  if (prefix.endsWith("/")) prefix = prefix.slice(0, -1);
  if (prefix !== "") {
    try {
      validateStorageKey(prefix);
    } catch (err) {
      bad(`the prefix ${JSON.stringify(prefix)} is not a valid key path (${(err as Error).message.replace(/^Invalid storage key [^:]*: /, "").replace(/\.$/, "")})`);
    }
  }
  return { bucket, prefix, uri: prefix === "" ? `s3://${bucket}` : `s3://${bucket}/${prefix}` };
}

/**
 * Why `name` is not a valid S3 bucket name, or undefined when it is.
 *
 * @example
 * ```ts
 * s3BucketNameProblem("ml-ckpt");    // undefined
 * s3BucketNameProblem("My_Bucket");  // "may only contain lowercase letters, digits, '.' and '-'"
 * ```
 */
export function s3BucketNameProblem(name: string): string | undefined {
  if (name === "") return "is empty";
  if (name.length < 3 || name.length > 63) return "must be 3 to 63 characters long";
  if (!/^[a-z0-9.-]+$/.test(name)) return "may only contain lowercase letters, digits, '.' and '-'";
  if (!/^[a-z0-9].*[a-z0-9]$/.test(name)) return "must start and end with a letter or digit";
  if (name.includes("..") || name.includes(".-") || name.includes("-.")) return "must not contain '..', '.-' or '-.'";
  if (/^\d+\.\d+\.\d+\.\d+$/.test(name)) return "must not look like an IP address";
  if (name.startsWith("xn--") || name.startsWith("sthree-")) return "must not start with 'xn--' or 'sthree-'";
  if (name.endsWith("-s3alias") || name.endsWith("--ol-s3") || name.endsWith("--x-s3")) return "must not end with a reserved suffix";
  return undefined;
}

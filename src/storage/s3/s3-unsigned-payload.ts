import type { PutObjectCommand, UploadPartCommand } from "@aws-sdk/client-s3";

/** The SigV4 header that carries the payload's SHA-256 (or `UNSIGNED-PAYLOAD`). */
const CONTENT_SHA256 = "x-amz-content-sha256";

/**
 * Leaves the body of an upload command out of its request signature when the request goes over
 * TLS and already carries a checksum of its body (`x-amz-checksum-*` or `Content-MD5`): the rule
 * botocore (the `aws` CLI, boto3) applies to S3. TLS protects the bytes in transit and S3 checks
 * the checksum, so signing the payload would only add a SHA-256 over every byte, on the main
 * thread (0.3–0.8 s of CPU per GiB on the project's VM; decision 0032). Over plain http, or
 * without a checksum, the payload stays signed.
 *
 * Added to the command, not the client, so that an injected client is not changed for its other
 * users; in the build step at low priority, so it runs after the SDK's checksum middleware and
 * before signing (finalizeRequest).
 */
export function unsignedPayloadOverTls<C extends PutObjectCommand | UploadPartCommand>(command: C): C {
  (command as PutObjectCommand).middlewareStack.add(
    (next) => async (args) => {
      const request = args.request as { protocol?: unknown; headers?: Record<string, string> } | undefined;
      const headers = request?.headers;
      if (request?.protocol === "https:" && headers) {
        const names = Object.keys(headers).map((h) => h.toLowerCase());
        const checksummed = names.some((h) => h.startsWith("x-amz-checksum-") || h === "content-md5");
        if (checksummed && !names.includes(CONTENT_SHA256)) headers[CONTENT_SHA256] = "UNSIGNED-PAYLOAD";
      }
      return next(args);
    },
    { step: "build", priority: "low", name: "runctlUnsignedPayloadOverTls" },
  );
  return command;
}

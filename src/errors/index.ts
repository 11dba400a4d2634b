export { RunctlError, CommandError, isRunctlError, abortError, throwIfAborted } from "./runctl-error.js";
export type { RunctlErrorCode, RunctlErrorOptions, CommandFailure } from "./runctl-error.js";

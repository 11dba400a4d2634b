/**
 * Shell quoting for transports. The implementation lives in util/ so that lower layers (storage's
 * `machineDir`) can quote without importing transport/.
 */
export { shellJoin, shellQuote } from "../util/shell-quote.js";

export { sshTransport } from "./ssh-transport.js";
export type { SshTransport } from "./ssh-transport.js";
export { SSH_TRANSPORT_DEFAULTS } from "./ssh-transport-options.js";
export type { SshJumpHost, SshTransportOptions } from "./ssh-transport-options.js";
export { parseKnownHosts, checkHostKey, hostFieldMatches, knownHostsName, keyFingerprint } from "./known-hosts.js";
export type { KnownHostEntry, HostKeyVerdict } from "./known-hosts.js";

export { sshHosts } from "./ssh-hosts-provider.js";
export type { SshHost, SshHostsOptions } from "./ssh-hosts-provider.js";

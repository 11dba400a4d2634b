/**
 * Whether a process with this pid runs on this host (in this pid namespace): signal 0 checks
 * without signalling. EPERM means it runs, owned by another user. Not a positive integer: false
 * (0 and negative pids would address process groups).
 */
export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

import type { Placement } from "./launch-instance.js";

/** A value one node of a gang produces and the others wait for (node 0's placement). */
interface Pending<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(err: unknown): void;
}

function pending<T>(): Pending<T> {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  promise.catch(() => {}); // a gang nobody else waits for must not be an unhandled rejection
  return { promise, resolve, reject };
}

/**
 * What the EC2 provider's machines of one multi-node gang share, by run id (docs/multi-node.md): one
 * security group (made by the first node to get there), node 0's placement (the others launch in the
 * same zone or subnet), and the instances in the group (the group goes only once all are gone). Also
 * the run's launch count, which makes every launch's idempotency token differ.
 */
export class Ec2GangState {
  private readonly groups = new Map<string, Promise<string>>();
  private readonly placements = new Map<string, Pending<Placement>>();
  private readonly members = new Map<string, Set<string>>();
  private readonly launches = new Map<string, number>();

  /** The gang's security group: `create` runs once per run; the other nodes get its promise. */
  sharedGroup(runId: string, create: () => Promise<string>): Promise<string> {
    let group = this.groups.get(runId);
    if (!group) {
      group = create();
      this.groups.set(runId, group);
      group.catch(() => this.groups.delete(runId));
    }
    return group;
  }

  /** Forgets a run's group (deleted, or its maker failed), so a restarted gang makes a new one. */
  forgetGroup(groupId: string): void {
    for (const [runId, group] of this.groups) void group.then((id) => id === groupId && this.groups.delete(runId), () => {});
  }

  /** Node 0's placement, once it has launched. */
  placement(runId: string): Promise<Placement> {
    return this.pendingPlacement(runId).promise;
  }

  /** Node 0 landed: the other nodes launch there. */
  placed(runId: string, placement: Placement): void {
    this.pendingPlacement(runId).resolve(placement);
    this.placements.delete(runId);
  }

  /** Node 0 failed: the gang cannot be completed, the others stop waiting. */
  placementFailed(runId: string, err: unknown): void {
    this.pendingPlacement(runId).reject(err);
    this.placements.delete(runId);
  }

  /** Notes an instance launched into a gang's shared group. */
  joined(groupId: string, instanceId: string): void {
    this.members.set(groupId, (this.members.get(groupId) ?? new Set()).add(instanceId));
  }

  /** The instances launched into a group (and forgets them). */
  takeMembers(groupId: string): string[] {
    const ids = [...(this.members.get(groupId) ?? [])];
    this.members.delete(groupId);
    return ids;
  }

  /** 1, 2, ...: which launch of the run this is. */
  nextLaunch(runId: string): number {
    const n = (this.launches.get(runId) ?? 0) + 1;
    this.launches.set(runId, n);
    return n;
  }

  private pendingPlacement(runId: string): Pending<Placement> {
    let entry = this.placements.get(runId);
    if (!entry) {
      entry = pending<Placement>();
      this.placements.set(runId, entry);
    }
    return entry;
  }
}

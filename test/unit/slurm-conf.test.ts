/**
 * The Slurm test cluster's pure parts (test/support/slurm-conf.ts): slurm.conf generation, `slurmd -C`
 * parsing and `scontrol -o` record parsing, on outputs recorded from Slurm 22.05.
 */
import { describe, expect, it } from "vitest";
import { hardwareWords, parseScontrolRecord, slurmConf } from "../support/slurm-conf.js";

describe("Slurm test cluster configuration", () => {
  it("keeps only the hardware words of slurmd -C, with RealMemory lowered by 5 %", () => {
    const out = "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105\nUpTime=0-07:07:06\n";
    expect(hardwareWords(out)).toBe("CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=22899");
    expect(() => hardwareWords("slurmd: error: something")).toThrow(/Unexpected slurmd -C output/);
  });

  it("writes one node line a host, the controller on node 0, both partitions and the test timings", () => {
    const conf = slurmConf({
      clusterName: "tabc",
      stateDir: "/var/tmp/runctl-slurm/abc",
      mungeSocket: "/var/tmp/runctl-slurm/abc/munge-run/munge.socket.2",
      nodes: [
        { name: "rtb0h0", address: "10.77.0.10" },
        { name: "rtb0h1", address: "10.77.0.11" },
      ],
      hardware: "CPUs=2 RealMemory=1000",
      credExpireS: 7,
    });
    const lines = conf.split("\n");
    expect(lines).toContain("SlurmctldHost=rtb0h0(10.77.0.10)");
    expect(lines).toContain("AuthInfo=socket=/var/tmp/runctl-slurm/abc/munge-run/munge.socket.2,cred_expire=7");
    expect(lines).toContain("NodeName=rtb0h1 NodeHostname=rtb0h1 NodeAddr=10.77.0.11 CPUs=2 RealMemory=1000 State=UNKNOWN");
    expect(lines.filter((l) => l.startsWith("PartitionName="))).toEqual([
      "PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
      "PartitionName=debug Nodes=ALL Default=NO MaxTime=INFINITE State=UP",
    ]);
    expect(lines).toContain("KillWait=5");
    expect(() => slurmConf({ clusterName: "x", stateDir: "/s", mungeSocket: "/m", nodes: [], hardware: "CPUs=1" })).toThrow();
  });

  it("parses scontrol -o records whose values contain spaces", () => {
    const line =
      "JobId=2 JobName=wrap UserId=rtb6h0(1005) JobState=PENDING Reason=Nodes_required_for_job_are_DOWN,_DRAINED_or_reserved_for_jobs_in_higher_priority_partitions Dependency=(null) Requeue=1 Restarts=1 ExitCode=0:0 NodeList=rtb6h[0-1] AllocNode:Sid=localhost:102 Comment=two words here TRES=cpu=2,node=2,billing=2 WorkDir=/home/a b Power=";
    const r = parseScontrolRecord(line);
    expect(r).toMatchObject({ JobId: "2", JobState: "PENDING", Restarts: "1", ExitCode: "0:0", NodeList: "rtb6h[0-1]", "AllocNode:Sid": "localhost:102" });
    expect(r["Comment"]).toBe("two words here");
    expect(r["TRES"]).toBe("cpu=2,node=2,billing=2");
    expect(r["WorkDir"]).toBe("/home/a b");
    expect(r["Power"]).toBe("");
  });
});

/**
 * The torture test's client as a process of its own, so the test can SIGKILL it mid-run and reattach
 * (`Runctl.attach`) from the test process. Started as `node --import tsx torture-client.ts '<spec JSON>'`
 * with RUNCTL_HOME inherited; prints `PHASE <phase>` for each phase and `END <status>` at the end.
 */
import { startTortureRun, type TortureRunSpec } from "./torture-plan.js";

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? "") as TortureRunSpec;
  const run = startTortureRun(spec);
  for await (const event of run) {
    if (event.type === "phase") process.stdout.write(`PHASE ${event.phase}\n`);
  }
  const result = await run;
  process.stdout.write(`END ${result.status}\n`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);

/**
 * `runctl`: the core (plans, runs, checkpoints), local and SSH machines, and folder storage. It
 * does not load the AWS SDK; the AWS adapters (ec2, ssmTransport, s3, ebsVolumes, sweepEc2) are in
 * `runctl/aws`.
 *
 * @packageDocumentation
 */
export { Runctl } from "./runctl.js";
export { RunPlan } from "./plan/run-plan.js";
export type {
  SyncOptions,
  SetupOptions,
  PipOptions,
  DataOptions,
  CheckpointOptions,
  BudgetOptions,
  ResumeSource,
  CancelStrategy,
  TrainOptions,
  DataSource,
  RecoverOptions,
  RecoverTrigger,
} from "./plan/plan-types.js";
export type { HyperparamValue } from "./plan/hyperparams.js";
export { CONTAINER_PATHS } from "./plan/container-options.js";
export type { ContainerOptions, ContainerMount } from "./plan/container-options.js";
export type { NodesOptions } from "./plan/nodes-options.js";
export { TrainingRun } from "./run/training-run.js";
export type { LogsOptions } from "./run/training-run.js";
export type { RunResult, CommittedCheckpoint, RunInterruption } from "./run/run-result.js";
export type * from "./run/events.js";
export { createEventPrinter } from "./run/event-printer.js";
export type { EventPrinter, EventPrinterOptions, EventPrinterStream } from "./run/event-printer.js";
export type { AttachOptions } from "./engine/attach-run.js";
export { doctor } from "./engine/doctor/doctor.js";
export type { DoctorTarget, DoctorOptions, DoctorReport } from "./engine/doctor/doctor.js";
export type { DoctorCheck, DoctorStatus } from "./util/doctor-check.js";
export type { PlanSummary } from "./plan/plan-summary.js";
export type { ProvisionedMachine } from "./plan/provisioned-machine.js";
export type { SyncResult, SyncPlan } from "./sync/sync-tree.js";
export type { LargestEntries, LargestEntry } from "./sync/size-guard.js";

export type { LogEntry, LogLevel, LogSource, LoggerMethods, RunctlLogger } from "./util/logger.js";
export { local } from "./providers/local/index.js";
export type { LocalProviderOptions } from "./providers/local/index.js";
export type { Provider, Machine, MachineRecord, MachineState, ProvisionRequest, PlannedResource, ProviderPlan, ProviderPlanRequest, ProviderDoctorReport } from "./providers/types.js";

export { sshHosts } from "./providers/ssh-hosts/index.js";
export type { SshHost, SshHostsOptions } from "./providers/ssh-hosts/index.js";
export { slurm } from "./providers/slurm/index.js";
export type { SlurmOptions } from "./providers/slurm/index.js";
export type { BatchEngine, BatchJobRequest, BatchJobStatus, BatchJobPhase, BatchCallOptions, BatchCheck } from "./providers/batch-types.js";

export type { SweepOptions, ProviderEstimate } from "./providers/types.js";
export type * from "./providers/sweep-types.js";
export { listRecordedResources, resourceLedgerPath } from "./ledger/index.js";
export type { ResourceRecord, ResourceKind, ListRecordedResourcesOptions } from "./ledger/index.js";
export { PRICE_CATALOG, onDemandPrice } from "./cost/price-catalog.js";

export { localTransport } from "./transport/local/index.js";
export { sshTransport } from "./transport/ssh/index.js";
export type { SshJumpHost, SshTransport, SshTransportOptions } from "./transport/ssh/index.js";
export { shellQuote, shellJoin } from "./transport/shell-quote.js";
export type { Transport, Command, ExecOptions, ExecResult, ExecHandle, OutputChunk } from "./transport/types.js";

export { localDir } from "./storage/local-dir/index.js";
export { downloadToFile } from "./storage/download-to-file.js";
export { validateStorageKey } from "./storage/storage-key.js";
export type { Storage, StorageObjectInfo, StorageCallOptions, StorageDescriptor, DirStorageDescriptor, S3StorageDescriptor, MachineSecrets } from "./storage/types.js";

export { checkpointStore } from "./checkpoints/index.js";
export type { Checkpoint, CheckpointStore, CheckpointVerification, CheckpointCallOptions, CheckpointManifest } from "./checkpoints/index.js";

export { RunctlError, CommandError, isRunctlError } from "./errors/index.js";
export type { RunctlErrorCode, RunctlErrorOptions, CommandFailure } from "./errors/index.js";

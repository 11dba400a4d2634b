export { slurm } from "./slurm-provider.js";
export type { SlurmOptions } from "./slurm-options.js";

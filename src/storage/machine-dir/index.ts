export { machineDir } from "./machine-dir-storage.js";

export { localDir } from "./local-dir-storage.js";

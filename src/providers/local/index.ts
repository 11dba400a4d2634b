export { local } from "./local-provider.js";
export type { LocalProviderOptions } from "./local-provider.js";

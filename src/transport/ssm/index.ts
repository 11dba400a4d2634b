export { ssmTransport } from "./ssm-transport.js";
export type { SsmTransport } from "./ssm-transport.js";
export { SSM_TRANSPORT_DEFAULTS } from "./ssm-transport-options.js";
export type { SsmTransportOptions } from "./ssm-transport-options.js";
export { STAGING_ROOT, STAGING_MARKER } from "./ssm-staging.js";
export type { StagingMarker } from "./ssm-staging.js";

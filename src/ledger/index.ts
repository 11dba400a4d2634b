export { recordResourceCreated, recordResourceDeleted, listRecordedResources, resourceLedgerPath } from "./resource-ledger.js";
export type { ResourceKind, ResourceRecord, ListRecordedResourcesOptions } from "./resource-ledger.js";

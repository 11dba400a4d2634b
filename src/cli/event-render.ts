// Moved to run/ so that `createEventPrinter` (a public export) can share it; the CLI keeps this path.
export { renderEvent } from "../run/render-event.js";

export { localTransport, localExec } from "./local-transport.js";

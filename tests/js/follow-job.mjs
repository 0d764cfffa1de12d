// Follows a job with the README's graphql-ws or graphql-sse snippet and prints what arrived:
// {"events": [job, ...]} and, when the subscription failed, "errors" (what the snippet threw).
// Usage: node follow-job.mjs <ws|sse> <url of /graphql (ws:// or http://)> <job id>
import WebSocket from "ws";
import { followJob } from "./readme/graphql-ws.mjs";
import { followJobOverSse } from "./readme/graphql-sse.mjs";

// Node 20 has no WebSocket of its own (browsers and Node 22 do).
globalThis.WebSocket ??= WebSocket;

const [transport, url, id] = process.argv.slice(2);
const follow = transport === "ws" ? followJob : followJobOverSse;
const events = [];
try {
  for await (const job of follow(url, id)) events.push(job);
  console.log(JSON.stringify({ events }));
} catch (errors) {
  console.log(JSON.stringify({ events, errors: Array.isArray(errors) ? errors : String(errors) }));
}

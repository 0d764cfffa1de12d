// Runs graphql-http's GraphQL-over-HTTP audits (`auditServer`) against a gateway and prints
// every result: `[{id, name, status, reason?, response?}]`, the response of a failed audit as
// its status, content type and body, so that a failing test says what the gateway answered.
// Usage: node audit.mjs <http url of /graphql>
import { auditServer } from "graphql-http";

const [url] = process.argv.slice(2);
const results = await auditServer({ url });
const printed = [];
for (const result of results) {
  const entry = { id: result.id, name: result.name, status: result.status };
  if (result.status !== "ok") {
    entry.reason = result.reason;
    const response = result.response;
    entry.response = {
      status: response.status,
      contentType: response.headers.get("content-type"),
      body: await response.text().catch((error) => `(unreadable: ${error})`),
    };
  }
  printed.push(entry);
}
console.log(JSON.stringify(printed));

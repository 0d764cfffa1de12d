// Proves the npm packages resolve and speaks to a gateway: prints the answer to `{ __typename }`.
// Usage: node smoke.mjs <http url of /graphql>
import { createClient } from "graphql-http";

const [url] = process.argv.slice(2);
const client = createClient({ url });
const result = await new Promise((resolve, reject) => {
  let value;
  client.subscribe(
    { query: "{ __typename }" },
    { next: (data) => (value = data), error: reject, complete: () => resolve(value) },
  );
});
console.log(JSON.stringify(result));

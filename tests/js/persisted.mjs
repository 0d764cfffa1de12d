// Apollo Client's persisted query link against a gateway: the same query asked twice, each as a
// hashed GET first (useGETForHashedQueries), as a frontend would.
// Usage: node persisted.mjs <http url of /graphql> <job id>
// Prints {"answers": [<data>, <data>], "sent": [{method, query, hash, status}, ...]}.
import { createHash } from "node:crypto";
import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { PersistedQueryLink } from "@apollo/client/link/persisted-queries";

const [url, jobId] = process.argv.slice(2);
const sent = [];

async function recordingFetch(input, init) {
  const target = new URL(typeof input === "string" ? input : input.url);
  const body = init?.body ? JSON.parse(init.body) : {};
  const extensions = body.extensions ?? JSON.parse(target.searchParams.get("extensions") ?? "{}");
  const response = await fetch(input, init);
  sent.push({
    method: init?.method ?? "GET",
    query: Boolean(body.query ?? target.searchParams.get("query")),
    hash: Boolean(extensions.persistedQuery?.sha256Hash),
    status: response.status,
  });
  return response;
}

const link = new PersistedQueryLink({
  sha256: (text) => createHash("sha256").update(text).digest("hex"),
  useGETForHashedQueries: true,
}).concat(new HttpLink({ uri: url, fetch: recordingFetch }));
const client = new ApolloClient({ link, cache: new InMemoryCache() });
const query = gql`
  query Job($id: ID!) {
    job(id: $id) {
      id
      state
    }
  }
`;
const answers = [];
for (let n = 0; n < 2; n++) {
  const { data } = await client.query({ query, variables: { id: jobId }, fetchPolicy: "network-only" });
  answers.push(data);
}
console.log(JSON.stringify({ answers, sent }));

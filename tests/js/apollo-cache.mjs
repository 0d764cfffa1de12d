// Proves the README's Apollo Client setup (readme/apollo-client.mjs) answers job(id:) and
// node(id:) from the cache once a job is there, by counting the requests it sends.
// Usage: node apollo-cache.mjs <http url of /graphql> <readme|plain> <id> <id> <id>
// `plain` runs the same queries on a client with a bare InMemoryCache: the control.
import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { createGatewayClient } from "./readme/apollo-client.mjs";

const [uri, setup, first, second, third] = process.argv.slice(2);
let requests = 0;
const fetchOfNode = globalThis.fetch;
globalThis.fetch = (...args) => {
  requests += 1;
  return fetchOfNode(...args);
};

const client =
  setup === "readme"
    ? createGatewayClient(uri)
    : new ApolloClient({ link: new HttpLink({ uri }), cache: new InMemoryCache() });

const JOBS = gql`query Jobs($ids: [ID!]!) { jobs(ids: $ids) { id state functionName } }`;
const JOB = gql`query Job($id: ID!) { job(id: $id) { id state functionName } }`;
const NODE = gql`query Node($id: ID!) { node(id: $id) { id ... on Job { state functionName } } }`;

const steps = [
  ["jobs", JOBS, { ids: [first, second] }],
  ["job of a job the cache holds", JOB, { id: first }],
  ["node of a job the cache holds", NODE, { id: second }],
  ["job of a job the cache lacks", JOB, { id: third }],
  ["the same job again", JOB, { id: third }],
];
const seen = [];
for (const [name, query, variables] of steps) {
  // cache-first is Apollo's default; written out because it is what the test is about.
  const { data } = await client.query({ query, variables, fetchPolicy: "cache-first" });
  seen.push({ name, requests, data });
}
console.log(JSON.stringify(seen));

import { ApolloClient, HttpLink, InMemoryCache } from "@apollo/client";

// A job is stored once in the cache, as `Job:<id>`, whichever query brought it. These read
// functions send job(id:) and node(id:) to that entry, so that a cache-first query of a job
// the cache holds is answered without a request; a job it lacks still goes to the gateway.
const toJob = (_, { args, toReference }) => toReference({ __typename: "Job", id: args.id });

export function createGatewayClient(uri) {
  return new ApolloClient({
    link: new HttpLink({ uri }),
    cache: new InMemoryCache({
      // Job is the only type implementing Node: `node(id:) { ... on Job }` needs to know it.
      possibleTypes: { Node: ["Job"] },
      typePolicies: {
        Query: { fields: { job: { read: toJob }, node: { read: toJob } } },
      },
    }),
  });
}

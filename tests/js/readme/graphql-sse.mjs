import { createClient } from "graphql-sse";

const JOB_UPDATES = `
  subscription JobUpdates($id: ID!) {
    jobUpdates(id: $id) { id state isFinished result { code files { name url } } }
  }`;

// The same subscription over Server-Sent Events: one HTTP request per operation.
export async function* followJobOverSse(url, id) {
  const client = createClient({ url }); // url: "https://gateway.example.com/graphql"
  try {
    for await (const result of client.iterate({ query: JOB_UPDATES, variables: { id } })) {
      if (result.errors) throw result.errors;
      yield result.data.jobUpdates;
    }
  } finally {
    client.dispose();
  }
}

import { createClient } from "graphql-ws";

const JOB_UPDATES = `
  subscription JobUpdates($id: ID!) {
    jobUpdates(id: $id) { id state isFinished result { code files { name url } } }
  }`;

// Yields the job now, then each time it changes; ends after the event whose isFinished is true.
// A failure (an invalid id, a limit reached...) is thrown as the array of GraphQL errors the
// gateway sent, each with `extensions.code`.
export async function* followJob(url, id) {
  const client = createClient({ url }); // url: "wss://gateway.example.com/graphql"
  try {
    for await (const result of client.iterate({ query: JOB_UPDATES, variables: { id } })) {
      if (result.errors) throw result.errors;
      yield result.data.jobUpdates;
    }
  } finally {
    await client.dispose();
  }
}

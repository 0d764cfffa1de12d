// Starts GraphiQL on the gateway's page. Everything it loads came from the gateway; what the
// page tells it (the query to open with) is the JSON block #graphiql-config.
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("graphiql-config").textContent);

  // The endpoint is the page's own URL: /graphql answers GraphQL over HTTP and, with the same
  // path, over WebSocket (graphql-transport-ws), behind any path prefix a proxy adds.
  var endpoint = new URL(window.location.href);
  endpoint.search = "";
  endpoint.hash = "";
  var socket = new URL(endpoint.href);
  socket.protocol = endpoint.protocol === "https:" ? "wss:" : "ws:";

  var fetcher = GraphiQL.createFetcher({
    url: endpoint.href,
    subscriptionUrl: socket.href,
  });

  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      plugins: [GraphiQLPluginExplorer.explorerPlugin()],
      defaultQuery: config.defaultQuery,
      // The headers tab, for an Authorization header; kept (in this browser's storage for this
      // origin) across reloads.
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: true,
      defaultEditorToolsVisibility: true,
      inputValueDeprecation: true,
    }),
  );
})();

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

  var send = GraphiQL.createFetcher({
    url: endpoint.href,
    subscriptionUrl: socket.href,
  });

  // GraphiQL sends an operation over the socket when the document it parsed says it is a
  // subscription, but it parses 100 ms after the last keystroke: a subscription run sooner went
  // over HTTP. Parsed here, the document is always the one being sent.
  function fetcher(params, options) {
    var parsed = options && options.documentAST;
    try {
      parsed = GraphiQL.GraphQL.parse(params.query);
    } catch (syntaxError) {
      // Sent as it is: the gateway answers what is wrong with it.
    }
    return send(params, Object.assign({}, options, { documentAST: parsed }));
  }

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

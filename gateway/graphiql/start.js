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

  // GraphiQL reads an edited document 100 ms after the last keystroke, and until then runs
  // with what it read before: an operation run sooner (Ctrl-Enter at once) went with the old
  // document's operation name (a 400) or, for a subscription, over HTTP instead of the socket.
  // The fetcher reads the document it is about to send instead.
  function fetcher(params, options) {
    var document;
    try {
      document = GraphiQL.GraphQL.parse(params.query);
    } catch (syntaxError) {
      return send(params, options); // as it is: the gateway says what is wrong with it
    }
    var operations = document.definitions.filter(function (definition) {
      return definition.kind === "OperationDefinition";
    });
    var known = operations.some(function (operation) {
      return operation.name && operation.name.value === params.operationName;
    });
    if (!known && operations.length === 1) {
      var name = operations[0].name;
      params = Object.assign({}, params, { operationName: name ? name.value : undefined });
    }
    return send(params, Object.assign({}, options, { documentAST: document }));
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

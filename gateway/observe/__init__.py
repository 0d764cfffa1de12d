"""Operating the gateway: metrics (`metrics`), request ids and the access log (`requests`),
log formats (`logs`) and traces (`tracing`, with the optional `otel` extra).

Nothing here imports the layers it watches: each layer declares the hook it calls (a
`BudgetObserver`, a `CallObserver`...), and `instruments` implements them with these tools.
"""

"""The response cache: answers that cannot change, kept as the exact bytes sent.

Whether an operation's answer may be kept, and how long, is `gateway.api.cacheability`'s to
say (resolvers and the operation policy tell it). `requests` reads the key of a GraphQL request
over HTTP without parsing its document; `store` keeps answers in memory within a byte bound;
`shared` shares them through Redis; `http` is the ASGI middleware that answers repeats and sets
the HTTP caching headers.
"""

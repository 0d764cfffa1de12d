"""Which operation of a document a request runs: the one `operationName` names, or the only one.

graphql-core refuses a document of several operations without a name, but Strawberry passes it
the first operation's name, so that the first one ran; and an unknown name left Strawberry
before any error code was given. `select_operation` runs right after parsing, on every
transport, and raises a coded error instead (a `GraphQLError` carrying a `GatewayError`, which
every transport answers as it answers a syntax error).
"""

from __future__ import annotations

from graphql import DocumentNode, GraphQLError, OperationDefinitionNode

from gateway.errors import GatewayError, OperationNameRequired, UnknownOperationName


def select_operation(document: DocumentNode, operation_name: object) -> None:
    """Raises a GraphQLError (OPERATION_NAME_REQUIRED, UNKNOWN_OPERATION_NAME) unless
    `operation_name` picks exactly one operation of `document`. A document without operations
    is left to GraphQL's own rules, and a name that is no string to the transport's."""
    operations = [
        definition
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode)
    ]
    if not operations:
        return
    names = [None if operation.name is None else operation.name.value for operation in operations]
    if operation_name is None:
        if len(operations) > 1:
            raise _as_graphql_error(OperationNameRequired(names))
        return
    if isinstance(operation_name, str) and operation_name not in names:
        raise _as_graphql_error(UnknownOperationName(operation_name, names))


def _as_graphql_error(error: GatewayError) -> GraphQLError:
    return GraphQLError(error.message, extensions=error.extensions, original_error=error)

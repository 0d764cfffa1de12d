"""The cost of an operation: an upper bound of the work its execution does, known before it runs.

    cost(selection set) = sum over its fields of  size x (weight + cost(the field's selection))

One unit is about the CPU time of one plain field (an object or a scalar). `weight` is 1, or
`WEIGHTS[type, field]` for fields that cost more: a signed URL (an HMAC chain) and a job lookup
(the loader, and on a miss an upstream call). How the weights and the default limit were
chosen, with what realistic operations cost: docs/bounded-requests.md.
`size` is 1, or for a list the most items it can have:

- `jobs(ids:)`: the number of ids, from the literal or the variable's value (the variables are
  known before execution), at most `GATEWAY_MAX_IDS` (more fails with TOO_MANY_IDS, unrun);
- `JobResult.files(first:)`: `first`, read the same way; without it, or over the maximum page
  size (which fails with INVALID_ARGUMENT), `GATEWAY_MAX_PAGE_SIZE`;
- the `edges` and `nodes` of `JobResult.filesConnection(first:)`: that field's `first`, read the
  same way (a fragment on the connection type itself counts a whole page: its memo cannot know
  the field it is spread under);
- introspection lists: the longest such list this schema has (its number of types, ...).

A list field without a size is a programmer error, refused when the model is made.

Upper bounds: a fragment spread twice counts twice and the inline fragments of an abstract type
all count, though execution merges them; `@skip`/`@include` count as included. Each fragment
definition is costed once per operation (`FragmentMemo`): linear in the document's size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    NullValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValueNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    get_operation_ast,
    is_list_type,
)

from gateway.api.fragments import FragmentMemo
from gateway.errors import QueryTooComplex

#: Fields that cost more than a plain value, in units of one plain field.
WEIGHTS: Mapping[tuple[str, str], int] = {
    ("Query", "job"): 10,
    ("Query", "node"): 10,
    ("Query", "jobs"): 10,  # per id
    ("Subscription", "jobUpdates"): 10,  # per event
    ("Mutation", "submitJob"): 10,
    ("ResultFile", "signedUrl"): 10,
    ("OssObject", "signedUrl"): 10,
}


@dataclass(frozen=True, slots=True)
class OperationCost:
    total: int
    #: Fragment definitions costed: at most once each, however often they are spread.
    fragment_evaluations: int


class _Walk:
    """One costing of one operation with its variables."""

    def __init__(
        self,
        model: CostModel,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: Mapping[str, Any],
    ) -> None:
        self.model = model
        self.variables = variables
        self.defaults = {
            definition.variable.name.value: definition.default_value
            for definition in operation.variable_definitions or ()
        }
        self.fragments = FragmentMemo(document, self._of_fragment, missing=0)

    def of(self, selection_set: SelectionSetNode, type_name: str, page: int | None = None) -> int:
        """The cost of `selection_set` on `type_name`; `page` is the page size of the connection
        field whose selection this is (None outside one, or when unknown)."""
        total = 0
        fields = self.model.fields
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                spec = fields.get((type_name, selection.name.value))
                if spec is None:  # __typename (or a field validation let through: costed as one)
                    total += 1
                    continue
                inner = 0
                if selection.selection_set is not None:
                    inner_page = None if spec.page is None else spec.page(selection, self)
                    inner = self.of(selection.selection_set, spec.type_name, inner_page)
                size = 1 if spec.size is None else spec.size(selection, self, page)
                total += size * (spec.weight + inner)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                total += self.of(
                    selection.selection_set, condition.name.value if condition else type_name, page
                )
            else:
                assert isinstance(selection, FragmentSpreadNode)
                total += self.fragments.value(selection.name.value)
        return total

    def length(self, value: ValueNode) -> int | None:
        """How many items a list argument holds, or None when it cannot be known."""
        if isinstance(value, VariableNode):
            name = value.name.value
            if name in self.variables:
                given = self.variables[name]
                if given is None:
                    return 0
                return len(given) if isinstance(given, list) else 1
            default = self.defaults.get(name)
            return None if default is None else self.length(default)
        if isinstance(value, ListValueNode):
            return len(value.values)
        if isinstance(value, NullValueNode):
            return 0
        return 1  # one value where a list is expected: GraphQL makes it a list of one

    def integer(self, value: ValueNode) -> int | None:
        """The value of an Int argument, or None when it is null or cannot be known."""
        if isinstance(value, VariableNode):
            name = value.name.value
            if name in self.variables:
                given = self.variables[name]
                return given if isinstance(given, int) and not isinstance(given, bool) else None
            default = self.defaults.get(name)
            return None if default is None else self.integer(default)
        if isinstance(value, IntValueNode):
            return int(value.value)
        return None

    def _of_fragment(self, fragment: FragmentDefinitionNode) -> int:
        return self.of(fragment.selection_set, fragment.type_condition.name.value)


#: The most items a list field can return, read from the field's node within a walk, and the
#: page size of the connection it belongs to (None outside one, or when unknown).
ListSize = Callable[[FieldNode, _Walk, int | None], int]
#: The page size a connection field gives the lists of its selection, read from its node.
PageSize = Callable[[FieldNode, _Walk], int]


@dataclass(frozen=True, slots=True)
class _FieldSpec:
    weight: int
    #: None for a field that is no list.
    size: ListSize | None
    #: The named type of the field's values.
    type_name: str
    #: None for a field that is no connection.
    page: PageSize | None = None


def _fixed(items: int) -> ListSize:
    return lambda field, walk, page: items


def _argument(field: FieldNode, name: str) -> ValueNode | None:
    for given in field.arguments or ():
        if given.name.value == name:
            return given.value
    return None


def _argument_length(argument: str, limit: int) -> ListSize:
    def size(field: FieldNode, walk: _Walk, page: int | None) -> int:
        value = _argument(field, argument)
        length = None if value is None else walk.length(value)
        return limit if length is None else min(length, limit)

    return size


def _first(limit: int) -> PageSize:
    """The field's `first` argument, within 0..limit; `limit` without one (or when it is null,
    unknown, or out of range: execution refuses those)."""

    def size(field: FieldNode, walk: _Walk) -> int:
        value = _argument(field, "first")
        first = None if value is None else walk.integer(value)
        return limit if first is None or not 0 <= first <= limit else first

    return size


def _page_of_the_connection(limit: int) -> ListSize:
    return lambda field, walk, page: limit if page is None else page


class CostModel:
    """Costs operations of one schema and refuses those over `limit`.

    Made once per schema (it reads every field of the schema); raises ValueError when a list
    field has no size, so that a new list field cannot be costed as a single value by mistake.
    """

    def __init__(
        self, schema: GraphQLSchema, *, limit: int, max_ids: int, max_page_size: int
    ) -> None:
        self.limit = limit
        first = _first(max_page_size)
        sizes: dict[tuple[str, str], ListSize] = {
            ("Query", "jobs"): _argument_length("ids", max_ids),
            ("JobResult", "files"): lambda field, walk, page: first(field, walk),
            ("ResultFileConnection", "edges"): _page_of_the_connection(max_page_size),
            ("ResultFileConnection", "nodes"): _page_of_the_connection(max_page_size),
            **{key: _fixed(items) for key, items in _introspection_sizes(schema).items()},
        }
        pages: dict[tuple[str, str], PageSize] = {("JobResult", "filesConnection"): first}
        self.fields: dict[tuple[str, str], _FieldSpec] = {}
        unsized = []
        for type_name, graphql_type in schema.type_map.items():
            if not isinstance(graphql_type, GraphQLObjectType | GraphQLInterfaceType):
                continue
            for field_name, field in graphql_type.fields.items():
                key = (type_name, field_name)
                size = sizes.get(key)
                if is_list_type(get_nullable_type(field.type)) and size is None:
                    unsized.append(f"{type_name}.{field_name}")
                self.fields[key] = _FieldSpec(
                    weight=WEIGHTS.get(key, 1),
                    size=size,
                    type_name=get_named_type(field.type).name,
                    page=pages.get(key),
                )
        if unsized:
            raise ValueError(f"Expected a size for every list field, none for {unsized}.")
        self._roots = {
            operation: root.name
            for operation, root in (
                (OperationType.QUERY, schema.query_type),
                (OperationType.MUTATION, schema.mutation_type),
                (OperationType.SUBSCRIPTION, schema.subscription_type),
            )
            if root is not None
        }
        # The introspection entry points, on the query type only.
        if schema.query_type is not None:
            for field_name, type_name in (("__schema", "__Schema"), ("__type", "__Type")):
                self.fields[(schema.query_type.name, field_name)] = _FieldSpec(1, None, type_name)

    def measure(
        self,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: Mapping[str, Any] | None = None,
    ) -> OperationCost:
        """The cost of `operation` (a definition of the validated `document`) with these
        variables (as sent: a variable not sent counts with its default, or as large as its
        field allows)."""
        walk = _Walk(self, document, operation, variables or {})
        root = self._roots.get(operation.operation)
        total = 0 if root is None else walk.of(operation.selection_set, root)
        return OperationCost(total=total, fragment_evaluations=walk.fragments.evaluations)

    def check(
        self,
        document: DocumentNode,
        operation_name: str | None,
        variables: Mapping[str, Any] | None,
    ) -> None:
        """Raises QueryTooComplex when the operation that will run costs more than `limit`.
        A document whose operation cannot be chosen is left to execution, which refuses it."""
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            return
        cost = self.measure(document, operation, variables).total
        if cost > self.limit:
            raise QueryTooComplex(cost=cost, limit=self.limit)


def _introspection_sizes(schema: GraphQLSchema) -> dict[tuple[str, str], int]:
    """The longest list each introspection field can return for this schema."""
    types = list(schema.type_map.values())
    with_fields = [t for t in types if isinstance(t, GraphQLObjectType | GraphQLInterfaceType)]
    abstract = [t for t in types if isinstance(t, GraphQLInterfaceType | GraphQLUnionType)]
    return {
        ("__Schema", "types"): len(types),
        ("__Schema", "directives"): len(schema.directives),
        ("__Type", "fields"): max((len(t.fields) for t in with_fields), default=0),
        ("__Type", "interfaces"): max((len(t.interfaces) for t in with_fields), default=0),
        ("__Type", "possibleTypes"): max(
            (len(schema.get_possible_types(t)) for t in abstract), default=0
        ),
        ("__Type", "enumValues"): max(
            (len(t.values) for t in types if isinstance(t, GraphQLEnumType)), default=0
        ),
        ("__Type", "inputFields"): max(
            (len(t.fields) for t in types if isinstance(t, GraphQLInputObjectType)), default=0
        ),
        ("__Field", "args"): max(
            (len(field.args) for t in with_fields for field in t.fields.values()), default=0
        ),
        ("__Directive", "args"): max((len(d.args) for d in schema.directives), default=0),
        ("__Directive", "locations"): max((len(d.locations) for d in schema.directives), default=0),
    }

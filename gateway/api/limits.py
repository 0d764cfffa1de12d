"""Validation rules that bound a document before it runs, in time linear in its size.

- `document_limits(max_depth, max_aliases)`: how deep an operation nests fields
  (`GATEWAY_MAX_QUERY_DEPTH`) and how many aliases the operations hold (`GATEWAY_MAX_ALIASES`),
  both counted through fragment spreads as Strawberry's QueryDepthLimiter and MaxAliasesLimiter
  count them. Those follow every spread anew, which is exponential in a document whose fragments
  each spread the previous one twice; ours evaluate each fragment once (`FragmentMemo`).
- `BoundedOverlappingFields`: the specification's OverlappingFieldsCanBeMergedRule from
  graphql-core, with a smaller work budget. It compares the fields that share a response name
  pairwise; graphql-core stops it after 500,000 steps, seconds of CPU, and we after
  `OVERLAP_BUDGET`, with an error that says why. Measurements: docs/bounded-requests.md.

`validation_rules(...)` is every rule an operation is validated with. Make it once per schema:
Strawberry's validation cache is keyed by the rule classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    specified_rules,
)
from graphql.validation import ASTValidationRule, OverlappingFieldsCanBeMergedRule
from graphql.validation.validate import ValidationAbortedError

from gateway.api.fragments import FragmentMemo

#: Steps OverlappingFieldsCanBeMergedRule may take on one document (graphql-core's own budget
#: unit: about one field comparison): tens of milliseconds, where realistic documents need a
#: few thousand at most.
OVERLAP_BUDGET = 20_000


@dataclass(frozen=True, slots=True)
class Shape:
    """How deep a selection set nests fields, and how many aliases it holds."""

    depth: int
    aliases: int


_NOTHING = Shape(depth=0, aliases=0)


class DocumentShape:
    """The `Shape` of a document's selection sets, each fragment definition walked once.

    Depth counts fields with a selection set along a path, as QueryDepthLimiter does:
    `{ job { id } }` is 1 deep; introspection fields (`__schema`, `__type`, `__typename`) count
    nothing, introspection having its own depth rule in graphql-core. Aliases count each spread
    of a fragment again, as MaxAliasesLimiter does.

    Recursive: use it on documents whose nesting the parser and graphql-core's validation have
    bounded (200 levels, through fragments too).
    """

    def __init__(self, document: DocumentNode) -> None:
        self.fragments = FragmentMemo(document, self._of_fragment, missing=_NOTHING)
        self._by_set: dict[int, Shape] = {}

    def of(self, selection_set: SelectionSetNode) -> Shape:
        known = self._by_set.get(id(selection_set))
        if known is not None:
            return known
        depth = aliases = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode) and selection.alias is not None:
                aliases += 1
            inner = self._inner(selection)
            depth = max(depth, self._depth_of(selection, inner))
            aliases += inner.aliases
        shape = Shape(depth=depth, aliases=aliases)
        self._by_set[id(selection_set)] = shape
        return shape

    def too_deep_at(self, operation: OperationDefinitionNode, limit: int) -> FieldNode | None:
        """The field where the deepest path of `operation` first goes deeper than `limit`."""
        current: SelectionSetNode | None = operation.selection_set
        level = 0
        last_field: FieldNode | None = None
        entered: set[str] = set()  # fragments entered at this level: a cycle ends the walk
        while current is not None and current.selections:
            best = max(
                current.selections,
                key=lambda selection: self._depth_of(selection, self._inner(selection)),
            )
            if isinstance(best, FieldNode):
                if level == limit + 1 or best.selection_set is None:
                    return best
                last_field, level, entered, current = best, level + 1, set(), best.selection_set
            elif isinstance(best, InlineFragmentNode):
                current = best.selection_set
            else:
                assert isinstance(best, FragmentSpreadNode)
                definition = self.fragments.definition(best.name.value)
                if definition is None or best.name.value in entered:
                    break
                entered.add(best.name.value)
                current = definition.selection_set
        return last_field

    def _of_fragment(self, fragment: FragmentDefinitionNode) -> Shape:
        return self.of(fragment.selection_set)

    def _inner(self, selection: SelectionNode) -> Shape:
        """The shape below `selection`: its selection set's, or its fragment's."""
        if isinstance(selection, FragmentSpreadNode):
            return self.fragments.value(selection.name.value)
        if isinstance(selection, FieldNode) and _is_introspection(selection):
            return _NOTHING
        selection_set = selection.selection_set  # type: ignore[attr-defined]
        return _NOTHING if selection_set is None else self.of(selection_set)

    @staticmethod
    def _depth_of(selection: SelectionNode, inner: Shape) -> int:
        if isinstance(selection, FieldNode):
            if selection.selection_set is None or _is_introspection(selection):
                return 0
            return 1 + inner.depth
        return inner.depth


def _is_introspection(field: FieldNode) -> bool:
    return field.name.value.startswith("__")


class DocumentLimits(ValidationRule):
    """Refuses operations nested deeper than `max_depth` (one error per operation, at the field
    that goes too deep) and documents whose operations hold more than `max_aliases` aliases.
    Make a subclass with the limits by `document_limits()`, once."""

    max_depth: ClassVar[int]
    max_aliases: ClassVar[int]

    def leave_document(self, node: DocumentNode, *_args: Any) -> None:
        # On leaving, not entering: graphql-core has then checked the nesting through fragments
        # (it aborts validation first when a document nests deeper than the recursion allows).
        shape = DocumentShape(node)
        aliases = 0
        for operation in node.definitions:
            if not isinstance(operation, OperationDefinitionNode):
                continue
            measured = shape.of(operation.selection_set)
            aliases += measured.aliases
            if measured.depth > self.max_depth:
                name = (
                    f"operation {operation.name.value!r}"
                    if operation.name
                    else "an anonymous operation"
                )
                self.report_error(
                    GraphQLError(
                        f"Expected operations nested at most {self.max_depth} fields deep, "
                        f"received {name} nested {measured.depth} deep.",
                        shape.too_deep_at(operation, self.max_depth),
                    )
                )
        if aliases > self.max_aliases:
            self.report_error(
                GraphQLError(
                    f"Expected at most {self.max_aliases} aliases in one document, "
                    f"received {aliases}."
                )
            )


def document_limits(*, max_depth: int, max_aliases: int) -> type[DocumentLimits]:
    """The `DocumentLimits` rule with these limits."""

    class Limits(DocumentLimits):
        pass

    Limits.max_depth = max_depth
    Limits.max_aliases = max_aliases
    return Limits


class BoundedOverlappingFields(OverlappingFieldsCanBeMergedRule):
    """OverlappingFieldsCanBeMergedRule, stopped after `OVERLAP_BUDGET` steps with an error
    that says why (graphql-core's own abort says only "Validation aborted.")."""

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        self.rule_context.remaining_complexity_budget = OVERLAP_BUDGET
        self._exhausted = False

    def enter_selection_set(
        self, selection_set: SelectionSetNode, _key: Any, parent: Any, *args: Any
    ) -> None:
        if self._exhausted:
            return
        try:
            super().enter_selection_set(selection_set, _key, parent, *args)
        except ValidationAbortedError:
            if self.rule_context.remaining_complexity_budget >= 0:
                raise  # too many errors, not our budget: graphql-core's own abort
            # This rule stops; the others go on (they are linear in the document).
            self._exhausted = True
            self.report_error(
                GraphQLError(
                    "Expected fields that can be checked against each other in at most "
                    f"{OVERLAP_BUDGET} steps, received a document that needs more: it selects "
                    "the same response name too many times (select each field once, or give "
                    "repeated fields distinct aliases)."
                )
            )


def validation_rules(*, max_depth: int, max_aliases: int) -> tuple[type[ASTValidationRule], ...]:
    """The specification's rules (the overlap rule bounded) and our limits, in one tuple."""
    return (
        *(
            BoundedOverlappingFields if rule is OverlappingFieldsCanBeMergedRule else rule
            for rule in specified_rules
        ),
        document_limits(max_depth=max_depth, max_aliases=max_aliases),
    )

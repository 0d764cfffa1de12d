"""`FragmentMemo`: a value per fragment definition of a document, computed once.

Walking a document by following its fragment spreads costs time exponential in its size: each
fragment may spread the previous one twice, and forty such fragments make 2^40 paths out of a
1.5 KB document. Every walk of ours (the depth and alias limits, the cost) goes through a memo
instead, so that each fragment definition is evaluated once however often it is spread, and the
walk is linear in the document.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from graphql import DocumentNode, FragmentDefinitionNode

T = TypeVar("T")


class FragmentMemo(Generic[T]):
    """The value of each fragment definition of `document`, made by `compute` on first use.

    Guarantees: `compute` is called at most once per fragment definition (`evaluations` counts
    the calls). `compute` may ask for the values of other fragments; a fragment asked for while
    its own value is being computed (a cycle) or that the document does not define gets
    `missing` instead. Both make the document invalid (graphql-core's validation reports them),
    so that value only has to keep the walk finite.
    """

    def __init__(
        self,
        document: DocumentNode,
        compute: Callable[[FragmentDefinitionNode], T],
        *,
        missing: T,
    ) -> None:
        self._definitions = {
            definition.name.value: definition
            for definition in document.definitions
            if isinstance(definition, FragmentDefinitionNode)
        }
        self._compute = compute
        self._missing = missing
        self._values: dict[str, T] = {}
        self._in_progress: set[str] = set()
        #: How many times `compute` ran: at most the number of fragment definitions.
        self.evaluations = 0

    def definition(self, name: str) -> FragmentDefinitionNode | None:
        return self._definitions.get(name)

    def value(self, name: str) -> T:
        if name in self._values:
            return self._values[name]
        definition = self._definitions.get(name)
        if definition is None or name in self._in_progress:
            return self._missing
        self._in_progress.add(name)
        try:
            self.evaluations += 1
            value = self._compute(definition)
        finally:
            self._in_progress.discard(name)
        self._values[name] = value
        return value

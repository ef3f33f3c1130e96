"""The structure checks of a tool schema, done once when it enters: every `$ref` resolves inside the document, no
loop of in-place keywords, not too many schemas applying to one value, validation nesting within Python's stack,
and every pattern one RE2 can run. Used by services.tools.schemas.checks (the reasons are in the package's
docstring)."""

from collections.abc import Iterator
from typing import Any

import referencing.exceptions
from referencing.jsonschema import DRAFT202012

from services.common.json_values import MAX_JSON_DEPTH
from services.tools.schemas.patterns import compile_pattern
from services.tools.schemas.problems import SchemaProblem, escape, quote
from services.tools.schemas.validator import NO_NETWORK

#: The longest chain of schemas one validation may nest through (each costs a few Python frames; the default
#: recursion limit is 1000 and validation starts on a fresh thread's stack).
MAX_EVALUATION_DEPTH = 160
#: The most schemas that may apply to one value in place ($ref, allOf, anyOf, ... counted along every branch): an
#: allOf of two refs to a definition that does the same, 40 times over, would apply 2^40.
MAX_IN_PLACE_SCHEMAS = 2_000

#: Keywords whose value is a schema applied to the same value (in place), or to a part of it (descending); and
#: keywords holding schemas that apply only through a $ref.
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_LIST = ("allOf", "anyOf", "oneOf")
_IN_PLACE_MAP = ("dependentSchemas",)
_DESCEND_ONE = ("additionalProperties", "items", "contains", "propertyNames", "unevaluatedItems",
                "unevaluatedProperties")
_DESCEND_LIST = ("prefixItems",)
_DESCEND_MAP = ("properties", "patternProperties")
_HOLDERS = ("$defs", "definitions")


class SchemaGraph:
    """The schemas of one document reachable from its root, and the edges validation can take between them:
    in place (the same value) or descending (a part of it)."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.pointers: dict[int, str] = {}
        self.nodes: dict[int, dict[str, Any]] = {}
        #: node -> [(child, pointer of the keyword leading there)]
        self.in_place: dict[int, list[tuple[int, str]]] = {}
        self.descending: dict[int, list[int]] = {}

    def check(self) -> None:
        self._explore()
        self._refuse_loops()
        order = self._post_order()
        self._refuse_costly_in_place(order)
        self._refuse_deep_evaluation(order)

    def _explore(self) -> None:
        resolver = NO_NETWORK.resolver_with_root(DRAFT202012.create_resource(self.root))
        stack: list[tuple[Any, str, Any]] = [(self.root, "", resolver)]
        #: The targets of $refs, explored once the document's own structure is (so that they have their pointers).
        targets: list[tuple[Any, str, Any]] = []
        unevaluated: str | None = None
        pattern_properties = False
        while stack or targets:
            if not stack:
                stack, targets = targets, []
            node, pointer, resolver = stack.pop()
            if not isinstance(node, dict) or id(node) in self.nodes:
                continue
            self.nodes[id(node)], self.pointers[id(node)] = node, pointer
            in_place = self.in_place.setdefault(id(node), [])
            descending = self.descending.setdefault(id(node), [])
            if "$schema" in node and node is not self.root:
                raise SchemaProblem(f"{pointer}/$schema", "a $schema inside a schema is not supported (tool "
                                    "schemas are JSON Schema 2020-12 throughout)")
            if "$dynamicRef" in node:
                raise SchemaProblem(f"{pointer}/$dynamicRef", "$dynamicRef is not supported in tool schemas")
            if isinstance(node.get("$id"), str) and node is not self.root:
                resolver = resolver.in_subresource(DRAFT202012.create_resource(node))
            for key, child, edge in _children(node, pointer):
                if not isinstance(child, dict):
                    continue  # true and false apply nothing further
                if edge == "in place":
                    in_place.append((id(child), key))
                elif edge == "descending":
                    descending.append(id(child))
                stack.append((child, key, resolver))
            if isinstance(node.get("$ref"), str):
                where = f"{pointer}/$ref"
                try:
                    resolved = resolver.lookup(node["$ref"])
                except (referencing.exceptions.Unresolvable, LookupError, TypeError, ValueError):
                    # Unresolvable, and what a pointer through a non-container raises (referencing indexes on).
                    raise SchemaProblem(
                        where, f"the $ref {quote(node['$ref'])} does not resolve inside the schema (references "
                        "are never fetched: put what it refers to under $defs)"
                    ) from None
                if isinstance(resolved.contents, dict):
                    in_place.append((id(resolved.contents), where))
                    targets.append((resolved.contents, f"{where} target", resolved.resolver))
            for pattern_pointer, pattern in _patterns(node, pointer):
                try:
                    compile_pattern(pattern)
                except ValueError as exc:
                    raise SchemaProblem(pattern_pointer, str(exc)) from None
            if "unevaluatedProperties" in node:
                unevaluated = unevaluated or f"{pointer}/unevaluatedProperties"
            pattern_properties = pattern_properties or "patternProperties" in node
        if unevaluated is not None and pattern_properties:
            raise SchemaProblem(unevaluated, "unevaluatedProperties together with patternProperties is not supported "
                                "(its evaluation runs Python's backtracking regular expressions)")

    def _refuse_loops(self) -> None:
        """A cycle of in-place edges: validation would apply the same schemas to the same value forever."""
        state: dict[int, int] = {}  # 1: on the current path, 2: done
        for start in self.nodes:
            if state.get(start):
                continue
            path = [(start, iter(self.in_place[start]))]
            state[start] = 1
            while path:
                node, edges = path[-1]
                for child, where in edges:
                    if state.get(child) == 1:
                        raise SchemaProblem(where, f"it leads back to {self.pointers[child] or 'the root'} without "
                                            "descending into the arguments: validating would never end")
                    if not state.get(child):
                        state[child] = 1
                        path.append((child, iter(self.in_place[child])))
                        break
                else:
                    state[node] = 2
                    path.pop()

    def _refuse_costly_in_place(self, order: list[int]) -> None:
        """How many schemas apply to one value from each node, along every in-place branch (capped, so that the
        numbers stay small)."""
        cost: dict[int, int] = {}
        for node in order:
            cost[node] = min(MAX_IN_PLACE_SCHEMAS + 1, 1 + sum(cost[child] for child, _ in self.in_place[node]))
            if cost[node] > MAX_IN_PLACE_SCHEMAS:
                raise SchemaProblem(self.pointers[node], f"more than {MAX_IN_PLACE_SCHEMAS:,} schemas would apply to "
                                    "one value from here ($ref, allOf, anyOf, ... along every branch)")

    def _refuse_deep_evaluation(self, order: list[int]) -> None:
        """The longest chain of schemas validation may nest through for arguments MAX_JSON_DEPTH deep: `longest`
        for k descents left is 1 + the longest of its in-place children (k) and descending children (k - 1);
        in-place edges form no loop (checked before), so each round is a walk in post-order."""
        previous: dict[int, int] = {}
        for _ in range(MAX_JSON_DEPTH + 2):  # arguments' levels, and the keys propertyNames descends into
            longest: dict[int, int] = {}
            for node in order:
                candidates = [longest[child] for child, _ in self.in_place[node]]
                candidates += [previous.get(child, 0) for child in self.descending[node]]
                longest[node] = 1 + max(candidates, default=0)
            previous = longest
        deepest = previous.get(id(self.root), 0)
        if deepest > MAX_EVALUATION_DEPTH:
            raise SchemaProblem("", f"validation could nest through {deepest} schemas (at most "
                                f"{MAX_EVALUATION_DEPTH}): shorten its chains of $ref, allOf, anyOf, ...")

    def _post_order(self) -> list[int]:
        """Nodes with every in-place child before its parent."""
        order: list[int] = []
        done: set[int] = set()
        for start in self.nodes:
            if start in done:
                continue
            path = [(start, iter(self.in_place[start]))]
            done.add(start)
            while path:
                node, edges = path[-1]
                for child, _ in edges:
                    if child not in done:
                        done.add(child)
                        path.append((child, iter(self.in_place[child])))
                        break
                else:
                    order.append(node)
                    path.pop()
        return order


def _children(node: dict[str, Any], pointer: str) -> Iterator[tuple[str, Any, str]]:
    """(pointer, subschema, "in place" | "descending" | "held") for each subschema under a keyword."""
    for keywords, edge, shape in (
        (_IN_PLACE_ONE, "in place", "one"), (_IN_PLACE_LIST, "in place", "list"), (_IN_PLACE_MAP, "in place", "map"),
        (_DESCEND_ONE, "descending", "one"), (_DESCEND_LIST, "descending", "list"),
        (_DESCEND_MAP, "descending", "map"), (_HOLDERS, "held", "map"),
    ):
        for keyword in keywords:
            value = node.get(keyword)
            base = f"{pointer}/{escape(keyword)}"
            if shape == "one" and isinstance(value, dict | bool):
                yield base, value, edge
            elif shape == "list" and isinstance(value, list):
                yield from ((f"{base}/{index}", item, edge) for index, item in enumerate(value))
            elif shape == "map" and isinstance(value, dict):
                yield from ((f"{base}/{escape(key)}", item, edge) for key, item in value.items())


def _patterns(node: dict[str, Any], pointer: str) -> Iterator[tuple[str, str]]:
    if isinstance(node.get("pattern"), str):
        yield f"{pointer}/pattern", node["pattern"]
    if isinstance(node.get("patternProperties"), dict):
        for pattern in node["patternProperties"]:
            yield f"{pointer}/patternProperties/{escape(pattern)}", pattern


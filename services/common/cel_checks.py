"""What `services.common.cel.compile` checks in a CEL parse tree before anything runs, and where each problem is.

The tree is cel-python's lark tree. The checks: how deeply it nests (MAX_TREE_DEPTH), how deeply comprehensions
(`map`, `filter`, `all`, `exists`, `exists_one`) nest (MAX_COMPREHENSION_DEPTH), that it calls only CEL's standard
functions, and that every variable it reads is a known one. Every problem is an InvalidArgument naming its position
("line 1, column 7"). Used by services.common.cel only; the bounds' reasons are in its docstring.
"""

from typing import Any

import lark
from celpy.evaluation import base_functions

from services.common.errors import InvalidArgument

#: How deeply the parse tree may nest. A parenthesis or a comprehension adds 10 levels, an operand of a chain like
#: `a + b + c` 2, and cel-python's evaluator recurses about 5.5 Python frames per level: this keeps evaluation
#: (about 700 frames at worst) within Python's default recursion limit of 1,000, which this module leaves alone.
MAX_TREE_DEPTH = 120
#: How many comprehensions may nest inside one another (`xs.map(a, ys.filter(b, ...))` nests 2).
MAX_COMPREHENSION_DEPTH = 2

#: The standard comprehension macros; each takes a variable name and an expression.
MACROS = frozenset({"all", "exists", "exists_one", "filter", "map"})
#: cel-python's extensions that are not CEL: `reduce` feeds a value back into itself (a string doubling per
#: element), and neither is portable to another CEL implementation.
NON_STANDARD = frozenset({"reduce", "min"})
#: Functions and methods an expression may call: CEL's standard ones (as cel-python implements them), and the
#: `has()` and `dyn()` macros. Operators (`_+_`) are not names.
FUNCTIONS = frozenset(name for name in base_functions if name.isidentifier()) - NON_STANDARD | {"has", "dyn"}
#: Identifiers that are CEL's type names, usable in expressions like `type(x) == int`.
TYPE_NAMES = frozenset({"bool", "bytes", "double", "int", "list", "map", "null_type", "string", "type", "uint"})


def at(line: int | None, column: int | None) -> str:
    """A position as messages write it: "line 1, column 7"."""
    return f"line {line or 1}, column {column or 1}"


def _token_at(token: lark.Token) -> str:
    return at(token.line, token.column)


def _tree_at(tree: lark.Tree[Any]) -> str:
    meta = tree.meta
    return at(getattr(meta, "line", None), getattr(meta, "column", None))


def syntax_error_reason(exc: lark.exceptions.UnexpectedInput) -> str:
    """What went wrong, in a few words."""
    if isinstance(exc, lark.exceptions.UnexpectedToken):
        if exc.token.type == "$END":
            return "the expression ends too early"
        return f"unexpected {str(exc.token)[:40]!r}"
    if isinstance(exc, lark.exceptions.UnexpectedCharacters):
        return f"unexpected character {exc.char!r}"
    return "the expression ends too early"


def _token(node: lark.Tree[Any], index: int) -> lark.Token:
    """The token CEL's grammar puts at `node.children[index]` (an identifier, a method's name)."""
    child = node.children[index]
    if not isinstance(child, lark.Token):  # the grammar never builds this; refused rather than trusted
        raise InvalidArgument(f"the expression cannot be parsed: a name was expected at {_tree_at(node)}")
    return child


def _bare_identifier(tree: lark.Tree[Any] | lark.Token) -> lark.Token | None:
    """The identifier `tree` consists of, if it is nothing else (`x`, not `x.y` or `(x)`)."""
    node = tree
    while isinstance(node, lark.Tree):
        if node.data == "ident":
            child = node.children[0]
            return child if isinstance(child, lark.Token) else None
        if len(node.children) != 1 or node.data in ("paren_expr", "unary_not", "unary_neg"):
            return None
        node = node.children[0]
    return None


def _is_field_selection(tree: lark.Tree[Any] | lark.Token) -> bool:
    """Whether `tree` is `e.f` (the one argument `has()` takes)."""
    node = tree
    while isinstance(node, lark.Tree) and len(node.children) == 1:
        node = node.children[0]
    return isinstance(node, lark.Tree) and node.data == "member_dot"


def check_tree(tree: lark.Tree[Any], known: frozenset[str]) -> frozenset[str]:
    """Walk the tree (iteratively: its depth is what is being checked) and return the state variables it reads.
    Children are visited left to right, so the first problem in the text is the one reported.

    Scopes: a comprehension's variable is visible in its body only (`xs.map(x, x + 1)`), and shadows a state
    variable of the same name there, as in CEL."""
    used: set[str] = set()
    # (node, comprehension variables in scope, comprehension depth, tree depth)
    stack: list[tuple[Any, frozenset[str], int, int]] = [(tree, frozenset(), 0, 1)]
    while stack:
        node, scope, comprehensions, depth = stack.pop()
        if not isinstance(node, lark.Tree):
            continue
        if depth > MAX_TREE_DEPTH:
            raise InvalidArgument(f"the expression nests too deeply at {_tree_at(node)} (more than "
                                  f"{MAX_TREE_DEPTH} levels); split it across nodes")
        kind = node.data
        if kind == "ident" or kind == "dot_ident":
            token = _token(node, 0)
            name = token.value
            if kind == "ident" and name in scope:
                continue
            if name in known:
                used.add(name)
            elif name not in TYPE_NAMES:
                shown = ", ".join(sorted(known)[:20]) or "none"
                raise InvalidArgument(f"unknown variable '{name}' at {_token_at(token)} (known variables: {shown})")
            continue
        if kind in ("ident_arg", "dot_ident_arg"):
            token = _token(node, 0)
            _check_function(token)
            arguments = node.children[1] if len(node.children) > 1 else None
            if token.value == "has" and (
                not isinstance(arguments, lark.Tree) or len(arguments.children) != 1
                or not _is_field_selection(arguments.children[0])
            ):
                raise InvalidArgument(f"has() at {_token_at(token)} takes one field selection, like has(m.f)")
            stack.extend((child, scope, comprehensions, depth + 1) for child in reversed(node.children[1:]))
            continue
        if kind == "member_object":
            raise InvalidArgument(f"message construction at {_tree_at(node)} is not supported; build a map")
        if kind == "member_dot_arg":
            target, method = node.children[0], _token(node, 1)
            arguments = node.children[2] if len(node.children) > 2 else None
            if method.value in MACROS:
                arguments_list = arguments.children if isinstance(arguments, lark.Tree) else []
                if len(arguments_list) != 2:
                    raise InvalidArgument(f"{method.value}() at {_token_at(method)} takes a variable name and an "
                                          f"expression, like xs.{method.value}(x, x > 0)")
                variable = _bare_identifier(arguments_list[0])
                if variable is None:
                    raise InvalidArgument(f"{method.value}() at {_token_at(method)}: its first argument must be a "
                                          "variable name")
                if comprehensions + 1 > MAX_COMPREHENSION_DEPTH:
                    raise InvalidArgument(f"{method.value}() at {_token_at(method)} nests comprehensions more than "
                                          f"{MAX_COMPREHENSION_DEPTH} deep")
                stack.append((arguments_list[1], scope | {variable.value}, comprehensions + 1, depth + 2))
                stack.append((target, scope, comprehensions, depth + 1))
                continue
            _check_function(method)
            if arguments is not None:
                stack.append((arguments, scope, comprehensions, depth + 1))
            stack.append((target, scope, comprehensions, depth + 1))
            continue
        stack.extend((child, scope, comprehensions, depth + 1) for child in reversed(node.children))
    return frozenset(used)


def _check_function(token: lark.Token) -> None:
    name = token.value
    if name in NON_STANDARD:
        raise InvalidArgument(f"{name}() at {_token_at(token)} is not standard CEL")
    if name not in FUNCTIONS and name not in MACROS:
        raise InvalidArgument(f"unknown function '{name}' at {_token_at(token)}")

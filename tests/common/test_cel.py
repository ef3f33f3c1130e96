"""services.common.cel: compiling refuses bad expressions with their position (and never raises anything else),
evaluation turns plain Python state into CEL and back, and a runaway expression is stopped at its bound."""

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common import cel
from services.common.errors import InvalidArgument

KNOWN = ("question", "answer", "items", "count", "order")


def refusal(expression: str, known: tuple[str, ...] = KNOWN) -> str:
    with pytest.raises(InvalidArgument) as exc:
        cel.compile(expression, known)
    assert type(exc.value) is InvalidArgument
    return str(exc.value)


@pytest.mark.parametrize(("expression", "message"), [
    ("count +", "syntax error at line 1, column 7: the expression ends too early"),
    ("count ++ 2", "syntax error at line 1, column 8: unexpected '+'"),
    ("count > 1 &&\n  answer )", "syntax error at line 2, column 10: unexpected ')'"),
    ("'unterminated", "syntax error at line 1, column 1: unexpected character"),
    ("count # 2", "syntax error at line 1, column 7: unexpected character '#'"),
])
def test_a_syntax_error_names_its_line_and_column(expression: str, message: str) -> None:
    assert refusal(expression).startswith(message)


def test_an_unknown_variable_is_named_with_its_position() -> None:
    assert refusal("question + '?' + sumary").startswith(
        "unknown variable 'sumary' at line 1, column 18 (known variables: answer, count, items, order, question)"
    )
    assert refusal("items.map(i, i + j)").startswith("unknown variable 'j' at line 1, column 18")
    assert refusal("items.map(i, i) + [i]").startswith("unknown variable 'i' at line 1, column 20")
    assert refusal("\n  .nope").startswith("unknown variable 'nope' at line 2, column 4")
    # The first unknown in the text is the one reported.
    assert refusal("a + items.map(x, b) + c").startswith("unknown variable 'a' at line 1, column 1")
    assert refusal("items.map(x, b) + c").startswith("unknown variable 'b' at line 1, column 14")
    assert refusal("f(1) + c").startswith("unknown function 'f' at line 1, column 1")


def test_known_variables_comprehension_variables_and_type_names_compile() -> None:
    program = cel.compile("items.filter(i, i.price > 10 && type(i) == map).map(x, x.name + question)", KNOWN)
    assert program.variables == {"items", "question"}
    assert program.source.startswith("items.filter")
    # A comprehension variable shadows a state variable of the same name, in its body only.
    assert cel.compile("items.map(count, count * 2)", KNOWN).variables == {"items"}
    assert cel.compile("1 + 2", ()).variables == frozenset()


@pytest.mark.parametrize(("expression", "message"), [
    ("frobnicate(items)", "unknown function 'frobnicate' at line 1, column 1"),
    ("items.frob()", "unknown function 'frob' at line 1, column 7"),
    ("items.reduce(r, i, 0, r + i)", "reduce() at line 1, column 7 is not standard CEL"),
    ("items.map(1, 2)", "map() at line 1, column 7: its first argument must be a variable name"),
    ("items.map(x, y, x)", "map() at line 1, column 7 takes a variable name and an expression"),
    ("has(order)", "has() at line 1, column 1 takes one field selection"),
    ("Order{id: 1}", "message construction at line 1, column 1 is not supported"),
    ("items.map(a, items.map(b, items.exists(c, c == a)))",
     "exists() at line 1, column 33 nests comprehensions more than 2 deep"),
    ("", "the expression is empty"),
    ("  \n ", "the expression is empty"),
    ("1" + " " * 2000, "the expression is 2001 characters long; the limit is 2000"),
    ("(" * 30 + "1" + ")" * 30, "the expression nests too deeply at line 1, column 13 (more than 120 levels)"),
])
def test_what_compile_refuses(expression: str, message: str) -> None:
    assert refusal(expression).startswith(message)


def test_the_longest_expression_compiles() -> None:
    expression = "'" + "x" * (cel.MAX_EXPRESSION_CHARS - 2) + "'"
    assert cel.evaluate(cel.compile(expression, ()), {}) == "x" * 1998


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_compile_raises_nothing_but_invalid_argument(expression: str) -> None:
    try:
        cel.compile(expression, KNOWN)
    except InvalidArgument:
        pass


_CEL_ALPHABET = st.sampled_from([
    *"()[]{}.,:?!<>=+-*/%&|'\"\\ \n0123456789abcxyz_",
    "items", "count", "map", "filter", "exists", "has", "size", "true", "null", "in", "b'", "r'", "'''", "1u", "e5",
])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_CEL_ALPHABET, max_size=60).map("".join))
def test_compile_raises_nothing_but_invalid_argument_on_cel_like_text(expression: str) -> None:
    """Text made of CEL's own tokens reaches further into the parser and the checks than arbitrary text; what
    compiles evaluates to a value or an EvaluationError, never another exception."""
    try:
        program = cel.compile(expression, KNOWN)
    except InvalidArgument:
        return
    try:
        cel.evaluate(program, {"items": [1, 2], "count": 3, "question": "q", "answer": "a", "order": {"id": 1}})
    except cel.EvaluationError:
        pass


def test_plain_values_round_trip_through_cel() -> None:
    state = {
        "order": {"id": 7, "lines": [{"sku": "a", "price": 2.5}, {"sku": "b", "price": 10.0}], "paid": True,
                  "note": None},
        "question": "Ünïcode ✓",
    }
    program = cel.compile("order", KNOWN)
    assert cel.evaluate(program, state) == state["order"]
    total = cel.compile("order.lines.map(l, l.price).exists(p, p > 5) ? question + '!' : 'no'", KNOWN)
    assert cel.evaluate(total, state) == "Ünïcode ✓!"
    values = cel.compile(
        "[1, -2, 3.5, 'x', true, null, {'k': [1u]}, b'ab', timestamp('2024-05-01T10:00:00Z'), duration('90s'), "
        "type(1)]", ()
    )
    result = cel.evaluate(values, {})
    assert result == [1, -2, 3.5, "x", True, None, {"k": [1]}, b"ab", "2024-05-01T10:00:00Z", "90s", "int"]
    assert [type(value) for value in result[:6]] == [int, int, float, str, bool, type(None)]
    assert type(result[6]["k"][0]) is int


def test_evaluation_errors_say_what_failed() -> None:
    cases = {
        "count / 0": "divide by zero",
        "order.missing": "no such member in mapping: 'missing'",
        "count + 'x'": "no such overload",
        "9223372036854775807 + count": "overflow",
    }
    for expression, words in cases.items():
        with pytest.raises(cel.EvaluationError, match=words):
            cel.evaluate(cel.compile(expression, KNOWN), {"count": 1, "order": {"id": 1}})


def test_a_variable_without_a_value_is_an_evaluation_error() -> None:
    program = cel.compile("answer + question", KNOWN)
    with pytest.raises(cel.EvaluationError, match=r"^variable 'answer' has no value yet$"):
        cel.evaluate(program, {"question": "q"})


def test_state_values_cel_cannot_read_are_refused() -> None:
    program = cel.compile("order", KNOWN)
    for value, words in ((object(), "is a object"), (2**70, "64-bit"), ({1: "x"}, "key that is not text")):
        with pytest.raises(cel.EvaluationError, match=words):
            cel.evaluate(program, {"order": value})


def test_nested_comprehensions_over_large_lists_stop_at_the_cost_bound() -> None:
    program = cel.compile("items.map(a, items.map(b, a + b)).size()", KNOWN)
    assert cel.evaluate(program, {"items": list(range(10))}) == 10
    started = time.monotonic()
    # The clock is set far out, so that only the budget can stop it, however loaded the machine (the default 2 s
    # fired first under load); the budget is what makes the answer the same everywhere.
    with pytest.raises(cel.EvaluationLimitExceeded, match=r"used up its budget of 100,000 steps and values"):
        cel.evaluate(program, {"items": list(range(10_000))}, timeout=300)
    assert time.monotonic() - started < 60


def test_string_growth_is_charged_by_length() -> None:
    program = cel.compile("items.map(i, answer + answer)", KNOWN)
    big = "x" * 10_000
    assert len(cel.evaluate(program, {"items": [1, 2], "answer": big})) == 2
    with pytest.raises(cel.EvaluationLimitExceeded, match="budget"):
        cel.evaluate(program, {"items": list(range(10)), "answer": big})
    # Reading a large state value as it is costs nothing: it is not new.
    assert cel.evaluate(cel.compile("answer", KNOWN), {"answer": "y" * 1_000_000}) == "y" * 1_000_000


def test_the_budget_and_the_clock_can_be_set_per_call() -> None:
    program = cel.compile("items.map(a, items.exists(b, b == a))", KNOWN)
    state = {"items": list(range(200))}
    with pytest.raises(cel.EvaluationLimitExceeded, match="budget of 50"):
        cel.evaluate(program, state, max_cost=50)
    with pytest.raises(cel.EvaluationLimitExceeded, match=r"ran longer than 0\.01 s"):
        cel.evaluate(program, state, max_cost=10**9, timeout=0.01)


def test_the_deepest_accepted_expression_evaluates_within_the_recursion_limit() -> None:
    # 11 nested parentheses, or a chain of 56 operands, is as deep as MAX_TREE_DEPTH lets an expression go.
    expression = "(" * 11 + "count" + ")" * 11
    assert cel.evaluate(cel.compile(expression, KNOWN), {"count": 4}) == 4
    refusal("(" * 12 + "count" + ")" * 12)
    chain = " + ".join(["count"] * 56)
    assert cel.evaluate(cel.compile(chain, KNOWN), {"count": 1}) == 56
    refusal(chain + " + count")


def test_reserved_names_cover_cel_words_and_types() -> None:
    assert {"true", "null", "in", "int", "string", "while"} <= cel.RESERVED_NAMES
    assert "answer" not in cel.RESERVED_NAMES


def test_the_size_of_built_values_is_bounded_even_when_they_share_one_string() -> None:
    # 600 references to one 100 KB string cost 600 against the step budget, but are 60 MB as JSON.
    program = cel.compile("items.map(i, answer)", KNOWN)
    big = "x" * 100_000
    assert len(cel.evaluate(program, {"items": list(range(10)), "answer": big})) == 10
    started = time.monotonic()
    with pytest.raises(cel.EvaluationLimitExceeded, match=r"built values larger than 2,000,000"):
        cel.evaluate(program, {"items": list(range(600)), "answer": big}, timeout=300)
    assert time.monotonic() - started < 30
    # Lists of lists count what they hold, and a bound can be set per call.
    nested = cel.compile("items.map(i, items)", KNOWN)
    assert len(cel.evaluate(nested, {"items": list(range(100))})) == 100
    with pytest.raises(cel.EvaluationLimitExceeded, match=r"built values larger than 5,000"):
        cel.evaluate(nested, {"items": list(range(100))}, max_size=5_000)
    # Reading a large state value as it is still costs nothing.
    assert len(cel.evaluate(cel.compile("items", KNOWN), {"items": ["y" * 100_000] * 50})) == 50


def test_doubling_a_list_stops_at_the_size_bound() -> None:
    # As a workflow's while loop would: each evaluation doubles the list of 100 KB strings it is given.
    program = cel.compile("items + items", KNOWN)
    items = ["x" * 100_000]
    with pytest.raises(cel.EvaluationLimitExceeded, match="built values larger than"):
        for _ in range(40):
            items = cel.evaluate(program, {"items": items}, timeout=300)
    assert len(items) * 100_000 <= cel.MAX_VALUE_SIZE


_STATE_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20) | st.sampled_from(["x" * 200_000, "\u0000\ud7ff\U0010ffff"]),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=5), children, max_size=6),
    max_leaves=40,
)
_GROWING = [
    "items", "items + items", "[items, items, items]", "items.map(a, items)", "items.map(a, items.map(b, answer))",
    "{'a': items, 'b': [items, items]}", "string(answer) + string(answer)", "count * 1e308 * 10.0",
]


@given(items=st.lists(_STATE_VALUES, max_size=40), answer=_STATE_VALUES, expression=st.sampled_from(_GROWING))
def test_evaluation_on_any_state_returns_a_bounded_value_or_an_evaluation_error(
    items: list[object], answer: object, expression: str
) -> None:
    """Generated state (non-finite numbers, deep nesting, huge strings, odd unicode) through expressions that
    grow values: a value within the size bound, or EvaluationError; nothing else, and soon."""
    program = cel.compile(expression, KNOWN)
    started = time.monotonic()
    try:
        value = cel.evaluate(program, {"items": items, "answer": answer, "count": 3}, timeout=60)
    except cel.EvaluationError:
        pass
    else:
        # Beyond what the state holds already (read as it is, it costs nothing), bounded by the size meter.
        given_size = len(repr(items)) + len(repr(answer))
        assert len(repr(value)) < given_size + 3 * cel.MAX_VALUE_SIZE + 10 * cel.MAX_COST
    assert time.monotonic() - started < 30

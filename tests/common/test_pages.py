"""services/common/pages.py: the page-size rule, and the page-token codec's key, signature, binding and range
checks (the services' own use of it: tests/common/test_page_tokens.py)."""

import base64

import pytest

from services.common.errors import InvalidArgument
from services.common.pages import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    MAX_PAGE_TOKEN_CHARS,
    PageTokens,
    PageTokenSettings,
    checked_page_size,
)
from services.common.settings import SettingsError, load_settings

REQUEST = {"state": None, "owner": "alice"}


def settings(**env: str) -> PageTokenSettings:
    return PageTokenSettings(_env_file=None, **env)


def test_one_page_size_rule() -> None:
    assert checked_page_size(0) == DEFAULT_PAGE_SIZE
    assert checked_page_size(7) == 7
    assert checked_page_size(2**31 - 1) == MAX_PAGE_SIZE
    with pytest.raises(InvalidArgument, match="page_size must be >= 0, got -1"):
        checked_page_size(-1)


def test_the_key_comes_from_the_settings_so_replicas_agree() -> None:
    key = {"PLATFORM_PAGE_TOKEN_KEY": "k" * 32}
    token = PageTokens.from_settings(settings(**key)).issue("ListRuns", REQUEST, {"turn": 3})
    assert PageTokens.from_settings(settings(**key)).read(token, "ListRuns", REQUEST).integer("turn") == 3
    # Derived from the service token when no key is set: replicas share that one already.
    derived = PageTokens.from_settings(settings(PLATFORM_SERVICE_TOKEN="s" * 40))
    again = PageTokens.from_settings(settings(PLATFORM_SERVICE_TOKEN="s" * 40))
    assert again.read(derived.issue("ListRuns", REQUEST, {"turn": 1}), "ListRuns", REQUEST).integer("turn") == 1
    for other in (settings(**{"PLATFORM_PAGE_TOKEN_KEY": "o" * 32}), settings(PLATFORM_SERVICE_TOKEN="t" * 40),
                  settings()):
        with pytest.raises(InvalidArgument, match=r"^page_token is not valid for this request"):
            PageTokens.from_settings(other).read(token, "ListRuns", REQUEST)
    # The key is not the service token itself (HKDF): a token signed with the raw secret is refused.
    raw = PageTokens(("s" * 40).encode()).issue("ListRuns", REQUEST, {"turn": 1})
    with pytest.raises(InvalidArgument):
        derived.read(raw, "ListRuns", REQUEST)


def test_a_short_key_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match=r"PLATFORM_PAGE_TOKEN_KEY.*at least 32 characters"):
        load_settings(PageTokenSettings, _env_file=None, PLATFORM_PAGE_TOKEN_KEY="short")


def test_development_mode_keys_differ_per_process_only() -> None:
    token = PageTokens.from_settings(settings()).issue("ListRuns", REQUEST, {"turn": 1})
    assert PageTokens.for_this_process().read(token, "ListRuns", REQUEST).integer("turn") == 1


@pytest.mark.parametrize(
    ("listing", "request_"),
    [("ListThreads", REQUEST), ("ListRuns", {"state": "running", "owner": "alice"}),
     ("ListRuns", {"state": None, "owner": "bob"}), ("ListRuns", {"state": None, "owner": None}),
     ("ListRuns", {"state": None}), ("ListRuns", {**REQUEST, "thread_id": "t"})],
)
def test_a_token_is_bound_to_its_listing_and_request(listing: str, request_: dict[str, object]) -> None:
    tokens = PageTokens.for_this_process()
    token = tokens.issue("ListRuns", REQUEST, {"turn": 1})
    with pytest.raises(InvalidArgument, match=f"a next_page_token that {listing} returned"):
        tokens.read(token, listing, request_)


def test_forged_altered_and_oversized_tokens_are_refused_before_decoding() -> None:
    tokens = PageTokens.for_this_process()
    token = tokens.issue("ListRuns", REQUEST, {"turn": 1})
    raw = base64.urlsafe_b64decode(token)
    bad = [
        token[:-2], token + "A", token + "=", "=" + token, token[:10] + "*" + token[11:],
        base64.urlsafe_b64encode(raw[:32] + b'{"turn":2}').decode(),  # the MAC of another position
        base64.urlsafe_b64encode(raw[:31]).decode(),  # shorter than a MAC
        base64.urlsafe_b64encode(b"[" * 100_000).decode(),  # deeply nested, and unsigned
        "A" * (MAX_PAGE_TOKEN_CHARS + 4), "\u00e9\u00e9\u00e9\u00e9", "\x00", " " + token,
    ]
    for variant in bad:
        with pytest.raises(InvalidArgument, match=r"^page_token is not valid for this request"):
            tokens.read(variant, "ListRuns", REQUEST)


@pytest.mark.parametrize(
    ("position", "read"),
    [
        ({"t": "0001-01-01T00:00:00+23:59"}, lambda p: p.time("t")),
        ({"t": "9999-12-31T23:59:59-23:59"}, lambda p: p.time("t")),
        ({"t": "2026-01-01T00:00:00"}, lambda p: p.time("t")),
        ({"t": 10**30}, lambda p: p.time("t")),
        ({"n": 10**30}, lambda p: p.integer("n")),
        ({"n": 2**31}, lambda p: p.integer("n")),
        ({"n": -1}, lambda p: p.integer("n")),
        ({"n": True}, lambda p: p.integer("n")),
        ({"n": "1"}, lambda p: p.integer("n")),
        ({"i": "not-a-uuid"}, lambda p: p.uuid("i")),
        ({"s": "x" * 1001}, lambda p: p.text("s")),
        ({}, lambda p: p.text("s")),
    ],
)
def test_values_out_of_range_in_a_signed_token_are_refused(position: dict, read: object) -> None:
    tokens = PageTokens.for_this_process()
    token = tokens.issue("ListRuns", REQUEST, position)
    with pytest.raises(InvalidArgument, match=r"^page_token is not valid for this request"):
        read(tokens.read(token, "ListRuns", REQUEST))  # type: ignore[operator]


def test_values_in_range_read_back() -> None:
    tokens = PageTokens.for_this_process()
    position = {"t": "2026-01-01T01:00:00+01:00", "n": 2**31 - 1, "i": "6F1C3A52-8A6E-4C1E-9D2A-1B2C3D4E5F60"}
    read = tokens.read(tokens.issue("ListRuns", REQUEST, position), "ListRuns", REQUEST)
    assert read.time("t").isoformat() == "2026-01-01T00:00:00+00:00"
    assert read.integer("n") == 2**31 - 1
    assert read.uuid("i") == "6f1c3a52-8a6e-4c1e-9d2a-1b2c3d4e5f60"

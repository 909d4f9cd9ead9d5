from __future__ import annotations

import json
import math
from typing import Any

import pytest

from gateway.errors import HandshakeFailed
from gateway.user import InvalidUser, User, parse_user, user_get

NOW = 1_700_000_000.0
DAY = 86400.0
SUBJECT = ("sub", "content.id", "content.email")


def parse(data: Any, subject: tuple[str, ...] = SUBJECT, max_age: float = DAY) -> User:
    return parse_user(data, subject_paths=subject, max_age=max_age, now=NOW)


def full_object() -> dict[str, Any]:
    return {
        "expiresAt": NOW + 3600,
        "groups": ["admin", "beta"],
        "content": {"id": "u-1", "email": "ada@example.com", "firstName": "Ada"},
        "apiPlaygroundInputs": {
            "header": {"Authorization": "Bearer sk-live-123"},
            "query": {"region": "eu"},
            "cookie": {},
            "path": {"org": "acme"},
            "server": {"url": "https://api.example.com"},
        },
        "sub": "user-1",
        "name": "Ada Lovelace",
    }


def test_full_user_object_is_kept_field_by_field() -> None:
    user = parse(full_object())
    assert user.sub == "user-1"
    assert user.expires_at == NOW + 3600
    assert user.groups == ("admin", "beta")
    assert user.content["firstName"] == "Ada"
    assert user.api_playground_inputs["path"] == {"org": "acme"}
    assert user.extra == {"sub": "user-1", "name": "Ada Lovelace"}


def test_minimal_user_object_gets_defaults() -> None:
    user = parse({"content": {"email": "ada@example.com"}})
    assert user.sub == "ada@example.com"
    assert user.groups == ()
    assert user.api_playground_inputs == {}
    assert user.expires_at == NOW + DAY


def test_null_fields_count_as_absent() -> None:
    user = parse({"sub": "u", "expiresAt": None, "groups": None, "content": None,
                  "apiPlaygroundInputs": {"header": None, "server": "https://api.example.com"}})
    assert user.groups == ()
    assert user.content == {}
    assert user.expires_at == NOW + DAY
    assert user.api_playground_inputs == {"server": "https://api.example.com"}


@pytest.mark.parametrize(("data", "named"), [
    ([], "user object"),
    ("sub", "user object"),
    (None, "user object"),
    ({"sub": "u", "expiresAt": "1700003600"}, "expiresAt"),
    ({"sub": "u", "expiresAt": True}, "expiresAt"),
    ({"sub": "u", "expiresAt": [NOW + 10]}, "expiresAt"),
    ({"sub": "u", "expiresAt": math.nan}, "expiresAt"),
    ({"sub": "u", "expiresAt": math.inf}, "expiresAt"),
    ({"sub": "u", "expiresAt": NOW - 1}, "expired"),
    ({"sub": "u", "expiresAt": NOW}, "expired"),
    ({"sub": "u", "groups": "admin"}, "groups must be a list of strings"),
    ({"sub": "u", "groups": ["admin", 3]}, "groups must be a list of strings"),
    ({"sub": "u", "groups": ["admin", None]}, "groups must be a list of strings"),
    ({"sub": "u", "groups": {"admin": True}}, "groups must be a list of strings"),
    ({"sub": "u", "content": ["a"]}, "content must be an object"),
    ({"sub": "u", "content": "Ada"}, "content must be an object"),
    ({"sub": "u", "content": 7}, "content must be an object"),
    ({"sub": "u", "content": {1: "x"}}, "content keys"),
    ({"sub": "u", "apiPlaygroundInputs": []}, "apiPlaygroundInputs must be an object"),
    ({"sub": "u", "apiPlaygroundInputs": {"body": {}}}, "apiPlaygroundInputs"),
    ({"sub": "u", "apiPlaygroundInputs": {"header": "x"}}, "apiPlaygroundInputs.header"),
    ({"sub": "u", "apiPlaygroundInputs": {"query": ["a"]}}, "apiPlaygroundInputs.query"),
    ({"sub": "u", "apiPlaygroundInputs": {"server": 8080}}, "apiPlaygroundInputs.server"),
    ({"content": {"name": "Ada"}}, "no subject"),
    ({"sub": "", "content": {"id": "  "}}, "no subject"),
    ({"sub": True}, "no subject"),
    ({"sub": {"id": "u"}}, "no subject"),
])
def test_wrong_user_object_is_rejected_with_the_field_named(data: Any, named: str) -> None:
    with pytest.raises(InvalidUser) as info:
        parse(data)
    assert named in str(info.value)
    assert info.value.code == "invalid_user"
    assert isinstance(info.value, HandshakeFailed)
    assert info.value.status == 400


def test_one_bad_field_rejects_the_whole_object() -> None:
    data = full_object()
    data["apiPlaygroundInputs"] = {"header": ["not", "an", "object"]}
    with pytest.raises(InvalidUser):
        parse(data)


def test_subject_is_the_first_present_path() -> None:
    data: dict[str, Any] = {"content": {"id": "", "email": "ada@example.com"}}
    assert parse(data).sub == "ada@example.com"
    data = {"sub": "s-1", "content": {"id": "c-1"}}
    assert parse(data).sub == "s-1"
    assert parse(data, subject=("content.id", "sub")).sub == "c-1"


def test_numeric_subject_becomes_a_string() -> None:
    assert parse({"content": {"id": 42}}).sub == "42"
    assert parse({"content": {"id": 42.0}}).sub == "42"
    assert parse({"content": {"id": 4.5}}).sub == "4.5"


def test_subject_from_a_deeper_or_custom_path() -> None:
    data = {"email": "top@example.com", "content": {"profile": {"login": "ada"}}}
    assert parse(data, subject=("content.profile.login",)).sub == "ada"
    assert parse(data, subject=("sub", "email")).sub == "top@example.com"


def test_expires_at_is_capped_by_max_age() -> None:
    assert parse({"sub": "u", "expiresAt": NOW + 10 * DAY}, max_age=DAY).expires_at == NOW + DAY
    assert parse({"sub": "u", "expiresAt": 10**400}, max_age=DAY).expires_at == NOW + DAY
    assert parse({"sub": "u", "expiresAt": int(NOW) + 60}).expires_at == NOW + 60


def test_later_changes_to_the_input_do_not_reach_the_user() -> None:
    data = full_object()
    user = parse(data)
    data["content"]["firstName"] = "Eve"
    data["groups"].append("root")
    assert user.content["firstName"] == "Ada"
    assert user.groups == ("admin", "beta")


def test_repr_hides_playground_secrets() -> None:
    user = parse(full_object())
    assert "sk-live-123" not in repr(user)


def test_to_json_shows_exposed_fields_and_sub() -> None:
    user = parse(full_object())
    view = user.to_json(["expiresAt", "groups", "content", "apiPlaygroundInputs"])
    assert view == {
        "sub": "user-1", "expiresAt": int(NOW) + 3600, "groups": ["admin", "beta"],
        "content": full_object()["content"],
        "apiPlaygroundInputs": full_object()["apiPlaygroundInputs"],
    }
    json.dumps(view)


def test_to_json_leaves_out_unexposed_fields() -> None:
    user = parse(full_object())
    view = user.to_json(["groups"])
    assert view == {"sub": "user-1", "groups": ["admin", "beta"]}
    assert "name" not in user.to_json(["expiresAt", "groups", "content", "apiPlaygroundInputs"])


def test_to_json_copies_cannot_change_the_user() -> None:
    user = parse(full_object())
    view = user.to_json(["content", "groups"])
    view["content"]["firstName"] = "Eve"
    view["groups"].append("root")
    assert user.content["firstName"] == "Ada"
    assert user.groups == ("admin", "beta")


def test_claims_take_fields_and_dotted_paths() -> None:
    user = parse(full_object())
    claims = user.claims(["groups", "content.email", "name", "content.missing", "expiresAt"])
    assert claims == {"groups": ["admin", "beta"], "email": "ada@example.com",
                      "name": "Ada Lovelace", "expiresAt": int(NOW) + 3600}


def test_user_get_reads_fields_and_paths() -> None:
    user = parse(full_object())
    assert user_get(user, "sub") == "user-1"
    assert user_get(user, "groups") == ["admin", "beta"]
    assert user_get(user, "content.email") == "ada@example.com"
    assert user_get(user, "apiPlaygroundInputs.path.org") == "acme"
    assert user_get(user, "name") == "Ada Lovelace"
    assert user_get(user, "content.nope") is None
    assert user_get(user, "groups.admin") is None
    assert user_get(user, "nothing") is None


def test_sub_always_means_the_gateway_subject() -> None:
    user = parse({"sub": "from-api", "content": {"id": "c-1"}}, subject=("content.id",))
    assert user.sub == "c-1"
    assert user_get(user, "sub") == "c-1"
    assert user.to_json([])["sub"] == "c-1"

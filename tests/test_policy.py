from __future__ import annotations

import time
from typing import Any

from gateway.html.head import PageMeta
from gateway.policy import Decision, Outcome, Policy
from gateway.user import User
from tests.helpers import make_config

RULES = [
    {"path": "/admin/**", "groups": ["admin"]},
    {"path": "/beta/*", "groups": ["beta", "staff"]},
    {"path": "/assets/secret/**", "groups": ["staff"]},
    {"path": "/closed/**", "groups": []},
]


def make_policy(mode: str = "authenticate", **access: Any) -> Policy:
    """The policy of a valid config in ``mode`` with ``RULES`` and the ``access`` given."""
    return Policy(make_config(mode=mode, access={"rules": RULES, **access}))


def user(*groups: str) -> User:
    return User(sub="u1", expires_at=time.time() + 3600, groups=groups)


def test_authenticate_anonymous_needs_login_on_plain_pages() -> None:
    decision = make_policy().decide("/guide/intro", None)
    assert decision.outcome is Outcome.NEEDS_LOGIN
    assert not decision.public
    assert decision.meta_applies


def test_authenticate_any_logged_in_user_reads_plain_pages() -> None:
    decision = make_policy().decide("/guide/intro", user())
    assert decision.outcome is Outcome.ALLOW
    assert decision.groups is None
    assert not decision.public


def test_public_globs_need_no_user() -> None:
    policy = make_policy()
    for path in ("/favicon.ico", "/assets/app.css", "/assets/img/logo.png"):
        decision = policy.decide(path, None)
        assert decision == Decision(Outcome.ALLOW, public=True)
    assert policy.decide("/assetsfoo", None).outcome is Outcome.NEEDS_LOGIN


def test_custom_public_list_replaces_default() -> None:
    policy = make_policy(public=["/", "/blog/**"])
    assert policy.decide("/", None).allowed
    assert policy.decide("/blog", None).allowed
    assert policy.decide("/blog/2024/post", None).allowed
    assert policy.decide("/favicon.ico", None).outcome is Outcome.NEEDS_LOGIN


def test_rule_group_members_allowed_others_denied() -> None:
    policy = make_policy()
    assert policy.decide("/admin", user("admin")).outcome is Outcome.ALLOW
    assert policy.decide("/admin/users", user("admin", "x")).outcome is Outcome.ALLOW
    denied = policy.decide("/admin/users", user("beta"))
    assert denied.outcome is Outcome.DENIED
    assert denied.groups == ("admin",)
    assert not denied.meta_applies


def test_rule_does_not_match_longer_sibling() -> None:
    decision = make_policy().decide("/administrator", user())
    assert decision.outcome is Outcome.ALLOW
    assert decision.groups is None


def test_rule_needs_any_one_of_its_groups() -> None:
    policy = make_policy()
    assert policy.decide("/beta/new", user("staff")).allowed
    assert policy.decide("/beta/new", user("beta")).allowed
    assert policy.decide("/beta/new", user("admin")).outcome is Outcome.DENIED
    # A single "*" stays in one segment, so deeper pages fall to the default.
    assert policy.decide("/beta/new/deeper", user("admin")).allowed


def test_rule_anonymous_is_asked_to_log_in() -> None:
    decision = make_policy().decide("/admin/users", None)
    assert decision.outcome is Outcome.NEEDS_LOGIN
    assert decision.groups == ("admin",)


def test_empty_groups_rule_admits_nobody() -> None:
    policy = make_policy()
    assert policy.decide("/closed/x", user("admin", "staff")).outcome is Outcome.DENIED
    assert policy.decide("/closed/x", None).outcome is Outcome.NEEDS_LOGIN


def test_rule_wins_over_public_glob() -> None:
    policy = make_policy()
    assert policy.decide("/assets/secret/key.txt", None).outcome is Outcome.NEEDS_LOGIN
    assert policy.decide("/assets/secret/key.txt", user()).outcome is Outcome.DENIED
    assert policy.decide("/assets/secret/key.txt", user("staff")).allowed


def test_first_matching_rule_wins() -> None:
    policy = make_policy(rules=[{"path": "/docs/internal/**", "groups": ["staff"]},
                                {"path": "/docs/**", "groups": ["customer"]}])
    assert policy.decide("/docs/internal/a", user("staff")).allowed
    assert policy.decide("/docs/internal/a", user("customer")).outcome is Outcome.DENIED
    assert policy.decide("/docs/guide", user("customer")).allowed


def test_rules_are_case_sensitive() -> None:
    assert make_policy().decide("/Admin/users", user()).allowed


def test_personalize_blocks_nothing() -> None:
    policy = make_policy("personalize")
    for path in ("/guide", "/admin/users", "/closed/x", "/assets/a.css"):
        for visitor in (None, user(), user("admin")):
            decision = policy.decide(path, visitor)
            assert decision.outcome is Outcome.ALLOW
            assert decision.public
            assert not decision.meta_applies


def test_denied_status_follows_config() -> None:
    assert make_policy().denied_status == 404
    assert make_policy(denied="not_found").denied_status == 404
    assert make_policy(denied="forbidden").denied_status == 403


def test_page_meta_public_opens_page_to_anonymous() -> None:
    policy = make_policy()
    decision = policy.decide_meta(policy.decide("/guide", None), PageMeta(public=True), None)
    assert decision.outcome is Outcome.ALLOW
    assert decision.public


def test_page_meta_groups_act_like_a_rule() -> None:
    policy = make_policy()
    meta = PageMeta(groups=("beta", "admin"))
    assert policy.decide_meta(policy.decide("/p", user("admin")), meta, user("admin")).allowed
    denied = policy.decide_meta(policy.decide("/p", user("x")), meta, user("x"))
    assert denied.outcome is Outcome.DENIED
    assert denied.groups == ("beta", "admin")
    anonymous = policy.decide_meta(policy.decide("/p", None), meta, None)
    assert anonymous.outcome is Outcome.NEEDS_LOGIN


def test_page_meta_empty_groups_admit_nobody() -> None:
    policy = make_policy()
    decision = policy.decide_meta(policy.decide("/p", user("a")), PageMeta(groups=()), user("a"))
    assert decision.outcome is Outcome.DENIED


def test_page_meta_groups_win_over_meta_public() -> None:
    policy = make_policy()
    meta = PageMeta(public=True, groups=("admin",))
    assert policy.decide_meta(policy.decide("/p", None), meta, None).outcome is Outcome.NEEDS_LOGIN


def test_no_page_meta_leaves_decision_alone() -> None:
    policy = make_policy()
    for visitor in (None, user()):
        decision = policy.decide("/p", visitor)
        assert policy.decide_meta(decision, PageMeta(), visitor) == decision


def test_config_wins_over_page_meta() -> None:
    policy = make_policy()
    rule = policy.decide("/admin/x", None)
    assert policy.decide_meta(rule, PageMeta(public=True), None) == rule
    public = policy.decide("/assets/a.css", user())
    assert policy.decide_meta(public, PageMeta(groups=("admin",)), user()) == public


def test_page_meta_ignored_when_switched_off() -> None:
    policy = make_policy(page_meta=False)
    decision = policy.decide("/p", None)
    assert not decision.meta_applies
    assert policy.decide_meta(decision, PageMeta(public=True), None) == decision


def test_page_meta_ignored_in_personalize_mode() -> None:
    policy = make_policy("personalize")
    decision = policy.decide("/p", user())
    assert policy.decide_meta(decision, PageMeta(groups=("admin",)), user()).allowed


def test_may_view_filters_like_a_request_would() -> None:
    policy = make_policy()
    assert policy.may_view("/guide", user())
    assert not policy.may_view("/guide", None)
    assert policy.may_view("/guide", None, PageMeta(public=True))
    assert not policy.may_view("/guide", user(), PageMeta(groups=("admin",)))
    assert policy.may_view("/guide", user("admin"), PageMeta(groups=("admin",)))
    assert not policy.may_view("/admin/x", user(), PageMeta(public=True))
    assert policy.may_view("/assets/a.css", None)
    assert make_policy("personalize").may_view("/admin/x", None)


def test_a_page_whose_metadata_cannot_be_read_opens_to_nobody() -> None:
    policy = make_policy()
    unknown = PageMeta(public=True, groups=("admin",), unreadable=True)
    for who in (user("admin"), user("x")):
        assert policy.decide_meta(policy.decide("/p", who), unknown, who).outcome \
            is Outcome.DENIED
    assert not policy.may_view("/p", user("admin"), unknown)


def test_a_remembered_decision_is_the_one_made_afresh_for_every_reader() -> None:
    # What covers a path is remembered per path, for at most so many paths: a path asked
    # again (after others pushed it out, or by another reader) is decided as the first time.
    paths = [f"/{top}/{n}{end}" for top in ("admin", "beta", "assets", "closed", "guide")
             for n in range(600) for end in ("", "/", "/index.html", ".html.gz")]
    paths += ["/" + "x" * 2000, "/admin/" + "y" * 2000, "/assets/" + "z" * 2000]
    readers = [None, user(), user("admin"), user("beta"), user("staff")]
    policy = make_policy()
    first = [[policy.decide(path, reader) for reader in readers] for path in paths]
    again = [[policy.decide(path, reader) for reader in reversed(readers)][::-1]
             for path in reversed(paths)][::-1]
    assert again == first
    fresh = [[make_policy().decide(path, reader) for reader in readers] for path in paths[::97]]
    assert fresh == first[::97]
    assert {d.outcome for row in first for d in row} == {
        Outcome.ALLOW, Outcome.NEEDS_LOGIN, Outcome.DENIED}

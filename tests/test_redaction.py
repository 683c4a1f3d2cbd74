"""Every form a password takes in a URL or a message is masked (feedback/secrets.py).

A property test: any password, put in each form a client accepts (raw where the form allows it,
percent-encoded where it must be), inside each kind of text it reaches an operator in (a bare
URL, an exception message, a repr, JSON), never survives redaction in either spelling.
"""

from __future__ import annotations

import json
import string
from urllib.parse import quote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from easeoff.feedback.observe.markup import el, to_html
from easeoff.feedback.secrets import redact_text, redact_url

pytestmark = pytest.mark.unit

# What RFC 3986 lets a userinfo or a query value hold unencoded (`@` too: people write it, and
# the authority's last `@` still ends the userinfo).
RAW_USERINFO = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@"
RAW_QUERY = string.ascii_letters + string.digits + "-._~!$'()*+,;:@/?"

# Each form: a URL with `{pw}` where the password goes, and whether it goes raw or encoded.
FORMS = [
    ("mysql://app:{pw}@db.example:3306/x", "raw-userinfo"),
    ("mysql://app:{pw}@db.example:3306/x", "encoded"),
    ("redis://:{pw}@cache:6379/0", "raw-userinfo"),
    ("rediss://default:{pw}@cache/0?ssl_cert_reqs=required", "encoded"),
    ("redis+sentinel://:{pw}@s1:26379,s2:26379/mymaster/0", "encoded"),
    ("redis://cache:6379/0?password={pw}", "encoded"),
    ("redis://cache:6379/0?password={pw}", "raw-query"),
    ("redis://cache:6379/0?db=1&password={pw}&socket_timeout=5", "encoded"),
    ("redis+sentinel://s1:26379/mymaster?sentinel_password={pw}&db=0", "encoded"),
    ("redis://u@cache/0?pass%77ord={pw}", "encoded"),
    ("mysql://db.example/x?user=app&passwd={pw}", "encoded"),
    ("mysql://db.example/x?pwd={pw}", "raw-query"),
    ("rediss://cache/0?ssl_certfile=/c.pem&ssl_password={pw}", "encoded"),
    ("https://hooks.example/cb?next=redis%3A%2F%2F%3A{pw2}%40cache%2F0", "twice-encoded"),
    ("host=db user=app password={pw} dbname=x", "encoded"),
]
WRAPPERS = [
    "{}",
    "Error connecting to {}. Connection refused.",
    "OperationalError(2003, \"Can't connect: '{}'\")",
    "ConnectionError('{}')",
    "<{}>",
]


def placed(template: str, how: str, password: str) -> str:
    once = quote(password, safe="")
    if how == "twice-encoded":
        return template.format(pw2=quote(once, safe=""))
    return template.format(pw=password if how.startswith("raw") else once)


def spellings(password: str) -> set[str]:
    once = quote(password, safe="")
    return {password, once, quote(once, safe="")}


def assert_masked(text: str, password: str, baseline: str) -> None:
    for spelling in spellings(password):
        assume(spelling not in baseline)  # the text around it happens to contain it: not a leak
        assert spelling not in redact_text(text), (text, redact_text(text))


@settings(max_examples=300, deadline=None)
@given(
    form=st.sampled_from(FORMS),
    wrapper=st.sampled_from(WRAPPERS),
    data=st.data(),
)
def test_no_password_survives_in_any_form(form: tuple[str, str], wrapper: str, data: st.DataObject) -> None:
    template, how = form
    alphabet = {"raw-userinfo": RAW_USERINFO, "raw-query": RAW_QUERY}.get(how)
    password = data.draw(st.text(alphabet=alphabet, min_size=4, max_size=24) if alphabet else st.text(min_size=4))
    url = placed(template, how, password)
    baseline = wrapper.format(redact_text(placed(template, how, "PLACEHOLDER")))
    assert_masked(wrapper.format(url), password, baseline)
    assert_masked(json.dumps({"error": wrapper.format(url)}), password, json.dumps({"e": baseline}))
    on_page = to_html(el("p", None, wrapper.format(url)))  # the exporter's page masks through the same redactor
    for spelling in spellings(password):
        assume(spelling not in to_html(el("p", None, baseline)))
        assert spelling not in on_page, on_page
    if wrapper == "{}" and "://" in url:
        for spelling in spellings(password):
            assert spelling not in redact_url(url), (url, redact_url(url))


def test_what_is_kept_around_a_masked_password() -> None:
    assert redact_text("mysql://app:s3cret@db/x") == "mysql://app:***@db/x"
    assert redact_text("redis://:s3cret@h:6379/0?password=s3cret") == "redis://:***@h:6379/0?password=***"
    assert redact_url("redis+sentinel://:pw@s1:26379,s2:26379/m?sentinel_password=x&db=0") == (
        "redis+sentinel://:***@s1:26379,s2:26379/m?sentinel_password=***&db=0"
    )
    assert redact_text("mysql://app:p@ss@db/x failed") == "mysql://app:***@db/x failed"


def test_text_without_a_password_passes_unchanged() -> None:
    for text in (
        "redis://cache:6379/0",
        "mysql://app@db.example/x",
        "http://h:80/?email=a@b.com",
        "deferred for 600s, the cap is 600s",
        "ZeroDivisionError: division by zero",
        "rediss://cache/0?ssl_ca_certs=/etc/ca.pem&db=2",
    ):
        assert redact_text(text) == text
        assert redact_url(text) == text

"""xmppd.jid: normalisation (RFC 7622) and the bare-JID cache of the hot path."""

from __future__ import annotations

import pytest

from xmppd.jid import JID, InvalidJID


def test_parse_normalises_localpart_and_domain_and_keeps_resource_case():
    j = JID.parse("Alice@Example.ORG/Phone")
    assert str(j) == "alice@example.org/Phone"
    assert (j.local, j.domain, j.resource) == ("alice", "example.org", "Phone")


def test_bare_of_a_full_jid_is_built_once_and_equals_a_parsed_bare_jid():
    j = JID.parse("alice@example.org/phone")
    b = j.bare
    assert b is j.bare  # cached: the router asks for it on every stanza
    assert b == JID.parse("alice@example.org") and hash(b) == hash(JID.parse("alice@example.org"))
    assert b.resource is None and b.is_bare and b.bare is b
    assert str(b) == "alice@example.org"


def test_bare_of_a_domain_jid_with_resource():
    assert str(JID.parse("example.org/admin").bare) == "example.org"


def test_jids_are_immutable():
    j = JID.parse("alice@example.org")
    with pytest.raises(AttributeError):
        j.local = "mallory"  # type: ignore[misc]


@pytest.mark.parametrize("text", ["", "@example.org", "alice@", "a@b@c", "alice@example.org/", "ali<ce@example.org"])
def test_malformed_jids_are_refused(text):
    with pytest.raises(InvalidJID):
        JID.parse(text)

"""vcard-temp (XEP-0054) with slixmpp xep_0054."""

from __future__ import annotations

import pytest
from slixmpp.exceptions import IqError


async def vclient(clients, pki, server, user: str):
    c = clients(f"{user}@localhost", cert=pki.client(f"vc-{user}", xmpp_addrs=[f"{user}@localhost"]))
    c.register_plugin("xep_0054")
    return await c.login(server.listener_port(0))


async def test_vcard_set_then_get_own_and_get_by_another_user(server, clients, pki):
    alice = await vclient(clients, pki, server, "alice")
    bob = await vclient(clients, pki, server, "bob")
    empty = await alice.plugin["xep_0054"].get_vcard(local=False, cached=False, timeout=10)
    assert empty["vcard_temp"]["FN"] == ""  # nothing stored: an empty vCard
    vc = alice.plugin["xep_0054"].make_vcard()
    vc["FN"] = "Alice Liddell"
    vc["NICKNAME"] = "alice & co"
    await alice.plugin["xep_0054"].publish_vcard(vc, timeout=10)
    mine = await alice.plugin["xep_0054"].get_vcard(local=False, cached=False, timeout=10)
    assert mine["vcard_temp"]["FN"] == "Alice Liddell"
    theirs = await bob.plugin["xep_0054"].get_vcard("alice@localhost", local=False, cached=False, timeout=10)
    assert theirs["vcard_temp"]["FN"] == "Alice Liddell"
    assert theirs["vcard_temp"]["NICKNAME"] in ("alice & co", ["alice & co"])
    assert theirs["from"] == "alice@localhost"


async def test_vcard_of_a_user_without_one_is_item_not_found(server, clients, pki):
    bob = await vclient(clients, pki, server, "bob")
    with pytest.raises(IqError) as err:
        await bob.plugin["xep_0054"].get_vcard("nobody@localhost", local=False, cached=False, timeout=10)
    assert err.value.condition == "item-not-found"


async def test_oversized_vcard_is_not_acceptable_the_stored_one_is_kept_and_the_session_goes_on(
        make_server, clients, pki):
    """XEP-0054 names no error for a size limit; like XEP-0060 §7.1.3.4 for a payload over a
    service-defined limit: not-acceptable (type modify) with a <text/> giving the limit."""
    server = await make_server({"modules": {"vcard": {"max_bytes": 1024}}})
    alice = await vclient(clients, pki, server, "alice")
    bob = await vclient(clients, pki, server, "bob")
    vcards = alice.plugin["xep_0054"]
    vc = vcards.make_vcard()
    vc["FN"] = "Alice"
    await vcards.publish_vcard(vc, timeout=10)
    big = vcards.make_vcard()
    big["FN"] = "x" * 2000
    with pytest.raises(IqError) as err:
        await vcards.publish_vcard(big, timeout=10)
    assert err.value.condition == "not-acceptable" and err.value.etype == "modify"
    assert "vCard too large" in err.value.text and "limit is 1024" in err.value.text
    # nothing replaced: the previous vCard is still served, to the owner and to others
    mine = await vcards.get_vcard(local=False, cached=False, timeout=10)
    assert mine["vcard_temp"]["FN"] == "Alice"
    theirs = await bob.plugin["xep_0054"].get_vcard("alice@localhost", local=False, cached=False, timeout=10)
    assert theirs["vcard_temp"]["FN"] == "Alice"
    # the session goes on: a vCard within the limit is accepted; another account is not affected
    vc["FN"] = "Alice L."
    await vcards.publish_vcard(vc, timeout=10)
    assert (await vcards.get_vcard(local=False, cached=False, timeout=10))["vcard_temp"]["FN"] == "Alice L."
    other = bob.plugin["xep_0054"].make_vcard()
    other["FN"] = "Bob"
    await bob.plugin["xep_0054"].publish_vcard(other, timeout=10)


async def test_another_user_cannot_set_my_vcard(server, clients, pki):
    alice = await vclient(clients, pki, server, "alice")
    await vclient(clients, pki, server, "bob")
    iq = alice.make_iq_set(ito="bob@localhost")
    iq.append(alice.plugin["xep_0054"].make_vcard())
    with pytest.raises(IqError) as err:
        await iq.send(timeout=10)
    assert err.value.condition in ("service-unavailable", "forbidden")

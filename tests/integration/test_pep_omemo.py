"""PEP (XEP-0163) as OMEMO (XEP-0384, legacy and v2) and OpenPGP for XMPP (XEP-0373) use it.
Real server, slixmpp peers with XEP-0060/0115/0163."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from .harness import WAIT_S
from .pep_support import (
    AXOLOTL,
    DEVICELIST,
    NS_PUBSUB,
    OMEMO2,
    OX,
    bundle,
    config_form,
    devicelist,
    iq_error,
    items_of,
    next_event,
    no_event,
    options,
    pep_login,
    same_xml,
    subscribe_both,
)

A, B, C = "alice@localhost", "bob@localhost", "carol@localhost"


async def test_disco_info_on_the_bare_jid_has_identity_pubsub_pep_and_feature_publish_options(server, clients):
    """The Conversations Compliance Tester check (XEP-0163 §1, XEP-0060 §7.1.5)."""
    alice = await pep_login(server, clients, "alice")
    bob = await pep_login(server, clients, "bob")
    for asker in (alice, bob):  # own account and someone else's
        info = await asker.plugin["xep_0030"].get_info(A, timeout=WAIT_S)
        q = info["disco_info"]
        assert ("pubsub", "pep", None, None) in q["identities"]
        feats = q["features"]
        for f in ("publish-options", "persistent-items", "access-open", "access-presence",
                  "access-whitelist", "auto-create", "filtered-notifications", "last-published",
                  "item-ids", "retrieve-items", "retract-items", "config-node"):
            assert f"{NS_PUBSUB}#{f}" in feats, f


async def test_legacy_omemo_devicelist_and_bundle_published_open_are_readable_by_a_stranger(server, clients):
    """XEP-0384 (0.3, eu.siacs.conversations.axolotl): devicelist item 'current' and one
    bundle node per device, access_model=open via publish-options; a user with no
    subscription at all (first contact) can fetch both."""
    alice = await pep_login(server, clients, "alice")
    carol = await pep_login(server, clients, "carol")
    ps = alice.plugin["xep_0060"]
    res = await ps.publish(A, DEVICELIST, id="current", payload=devicelist(1111, 2222),
                           options=options(alice, access_model="open"), timeout=WAIT_S)
    assert res["pubsub"]["publish"]["item"]["id"] == "current"
    await ps.publish(A, f"{AXOLOTL}.bundles:1111", id="current", payload=bundle(1111),
                     options=options(alice, access_model="open", persist_items="true"), timeout=WAIT_S)
    got = await items_of(carol, A, DEVICELIST)
    assert [i for i, _ in got] == ["current"]
    assert same_xml(got[0][1], devicelist(1111, 2222))
    got = await items_of(carol, A, f"{AXOLOTL}.bundles:1111")
    assert same_xml(got[0][1], bundle(1111))
    # re-publishing 'current' replaces it (max_items 1), the id stays 'current'
    await ps.publish(A, DEVICELIST, id="current", payload=devicelist(1111, 2222, 3333),
                     options=options(alice, access_model="open"), timeout=WAIT_S)
    got = await items_of(carol, A, DEVICELIST)
    assert len(got) == 1 and same_xml(got[0][1], devicelist(1111, 2222, 3333))


async def test_contact_with_devicelist_notify_gets_the_notification_and_a_stranger_does_not(server, clients):
    """XEP-0163 §4: notifications go to the owner's resources and to presence
    subscribers whose caps carry <node>+notify; never to strangers, even for open nodes."""
    alice = await pep_login(server, clients, "alice", notify=(DEVICELIST,))
    bob = await pep_login(server, clients, "bob", notify=(DEVICELIST,))
    carol = await pep_login(server, clients, "carol", notify=(DEVICELIST,))
    dave = await pep_login(server, clients, "dave")  # subscribed, but no +notify
    await subscribe_both(server, alice, bob)
    await subscribe_both(server, alice, dave)
    await caps_known(server, bob, carol, alice)
    await alice.plugin["xep_0060"].publish(A, DEVICELIST, id="current", payload=devicelist(7),
                                           options=options(alice, access_model="open"), timeout=WAIT_S)
    for who in (bob, alice):
        msg = await next_event(who, node=DEVICELIST)
        assert str(msg["from"]) == A and msg["type"] == "headline"
        item = msg["pubsub_event"]["items"]["item"]
        assert item["id"] == "current" and same_xml(item.xml[0], devicelist(7))
    await no_event(carol)
    await no_event(dave)


async def test_last_published_item_is_sent_when_a_contact_comes_online_with_notify(server, clients):
    """XEP-0163 §4.3.4: a newly available resource whose caps show +notify gets the
    last published item (with <delay/>)."""
    alice = await pep_login(server, clients, "alice")
    bob = await pep_login(server, clients, "bob")
    await subscribe_both(server, alice, bob)
    await alice.plugin["xep_0060"].publish(A, DEVICELIST, id="current", payload=devicelist(42),
                                           options=options(alice, access_model="open"), timeout=WAIT_S)
    bob2 = await pep_login(server, clients, "bob", "phone", notify=(DEVICELIST,))
    msg = await next_event(bob2, node=DEVICELIST)
    assert str(msg["from"]) == A
    assert same_xml(msg["pubsub_event"]["items"]["item"].xml[0], devicelist(42))
    assert msg.xml.find("{urn:xmpp:delay}delay") is not None


async def test_omemo2_bundles_node_with_max_items_max_keeps_one_item_per_device(server, clients):
    """XEP-0384 v0.9: all bundles in urn:xmpp:omemo:2:bundles, item id = device id,
    pubsub#max_items = max."""
    alice = await pep_login(server, clients, "alice")
    carol = await pep_login(server, clients, "carol")
    ps = alice.plugin["xep_0060"]
    node = f"{OMEMO2}:bundles"
    for dev in (31415, 27182, 31415):
        await ps.publish(A, node, id=str(dev), payload=bundle(dev, OMEMO2),
                         options=options(alice, access_model="open", max_items="max"), timeout=WAIT_S)
    got = await items_of(carol, A, node)
    assert sorted(i for i, _ in got) == ["27182", "31415"]
    one = await items_of(carol, A, node, item_ids=["27182"])
    assert len(one) == 1 and same_xml(one[0][1], bundle(27182, OMEMO2))
    cfg = await ps.get_node_config(A, node, timeout=WAIT_S)
    form = cfg["pubsub_owner"]["configure"]["form"]
    assert form.get_fields()["pubsub#max_items"]["value"] == str(server_limit(server))
    await ps.publish(A, f"{OMEMO2}:devices", id="current", payload=devicelist(31415, 27182, ns=OMEMO2),
                     options=options(alice, access_model="open", max_items="max"), timeout=WAIT_S)


def server_limit(server) -> int:
    return server.pep.max_items


async def test_precondition_not_met_then_owner_reconfigures_then_publish_succeeds(server, clients):
    """XEP-0060 §7.1.5: an existing node whose configuration differs from the
    publish-options -> conflict + precondition-not-met, nothing stored; the client
    reconfigures the node (§8.2) and publishes again."""
    alice = await pep_login(server, clients, "alice")
    carol = await pep_login(server, clients, "carol")
    ps = alice.plugin["xep_0060"]
    await ps.publish(A, DEVICELIST, id="current", payload=devicelist(1), timeout=WAIT_S)  # default: presence
    cond, app, text = await iq_error(ps.publish(A, DEVICELIST, id="current", payload=devicelist(1, 2),
                                                options=options(alice, access_model="open"), timeout=WAIT_S))
    assert (cond, app) == ("conflict", "precondition-not-met") and "access_model" in text
    got = await items_of(alice, A, DEVICELIST)
    assert same_xml(got[0][1], devicelist(1))  # nothing stored
    cond, app, _ = await iq_error(items_of(carol, A, DEVICELIST))
    assert (cond, app) == ("not-authorized", "presence-subscription-required")
    # an unknown publish option is a failed precondition too
    cond, app, text = await iq_error(ps.publish(A, DEVICELIST, id="current", payload=devicelist(1, 2),
                                                options=options(alice, frobnicate="1"), timeout=WAIT_S))
    assert (cond, app) == ("conflict", "precondition-not-met") and "frobnicate" in text
    await ps.set_node_config(A, DEVICELIST, config_form(alice, access_model="open"), timeout=WAIT_S)
    await ps.publish(A, DEVICELIST, id="current", payload=devicelist(1, 2),
                     options=options(alice, access_model="open"), timeout=WAIT_S)
    got = await items_of(carol, A, DEVICELIST)
    assert same_xml(got[0][1], devicelist(1, 2))


async def test_openpgp_public_keys_are_open_and_the_secret_key_node_is_readable_by_its_owner_only(server, clients):
    """XEP-0373 §4/§5: public key node + metadata node with access_model=open;
    urn:xmpp:openpgp:0:secret-key with access_model=whitelist (XEP-0223): another
    user, even a mutual contact, is refused (not-allowed + closed-node)."""
    alice = await pep_login(server, clients, "alice")
    bob = await pep_login(server, clients, "bob")
    await subscribe_both(server, alice, bob)
    ps = alice.plugin["xep_0060"]
    fpr = "1357B01865B2503C18453D208CAC2A9678548E35"
    pubkey = ET.Element(f"{{{OX}}}pubkey")
    ET.SubElement(pubkey, f"{{{OX}}}data").text = "BASE64-OPENPGP-PUBLIC-KEY"
    await ps.publish(A, f"{OX}:public-keys:{fpr}", id="2018-03-01T15:26:12Z", payload=pubkey,
                     options=options(alice, access_model="open"), timeout=WAIT_S)
    meta = ET.Element(f"{{{OX}}}public-keys-list")
    ET.SubElement(meta, f"{{{OX}}}pubkey-metadata", {"v4-fingerprint": fpr, "date": "2018-03-01T15:26:12Z"})
    await ps.publish(A, f"{OX}:public-keys", id="current", payload=meta,
                     options=options(alice, access_model="open"), timeout=WAIT_S)
    secret = ET.Element(f"{{{OX}}}secretkey")
    secret.text = "BASE64-ENCRYPTED-SECRET-KEY"
    await ps.publish(A, f"{OX}:secret-key", id="current", payload=secret,
                     options=options(alice, access_model="whitelist", persist_items="true"), timeout=WAIT_S)
    assert same_xml((await items_of(bob, A, f"{OX}:public-keys:{fpr}"))[0][1], pubkey)
    assert same_xml((await items_of(bob, A, f"{OX}:public-keys"))[0][1], meta)
    cond, app, text = await iq_error(items_of(bob, A, f"{OX}:secret-key"))
    assert (cond, app) == ("not-allowed", "closed-node") and text
    assert same_xml((await items_of(alice, A, f"{OX}:secret-key"))[0][1], secret)
    # nor can anyone else reconfigure or purge it
    cond, _, _ = await iq_error(bob.plugin["xep_0060"].set_node_config(
        A, f"{OX}:secret-key", config_form(bob, access_model="open"), timeout=WAIT_S))
    assert cond == "forbidden"


async def caps_known(server, *clients_) -> None:
    """Wait until the server learned each client's caps (a +notify feature or any)."""
    from .roster_support import eventually

    async def check():
        return all(server.caps.features_of(s) for c in clients_
                   for s in server.sessions.resources(_bare(c)) if str(s.jid) == str(c.boundjid))
    await eventually(check)


def _bare(c):
    from xmppd.jid import JID
    return JID.parse(str(c.boundjid.bare))


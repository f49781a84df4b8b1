"""Bad input to the MUC service gets the right stanza error with a <text>, never a traceback or a closed stream."""

from __future__ import annotations

import logging
import re

import pytest

from .muc_support import raw_user

MUC = "http://jabber.org/protocol/muc"
ROOM = "h@conference.localhost"

CASES = [
    ("iq-without-payload", f"<iq type='get' id='x' to='{ROOM}'/>", "bad-request"),
    ("admin-bad-jid", f"<iq type='set' id='x' to='{ROOM}'><query xmlns='{MUC}#admin'>"
                      "<item affiliation='member' jid='a@b@c'/></query></iq>", "jid-malformed"),
    ("admin-unknown-affiliation", f"<iq type='set' id='x' to='{ROOM}'><query xmlns='{MUC}#admin'>"
                                  "<item affiliation='king' jid='bob@localhost'/></query></iq>", "bad-request"),
    ("admin-list-none", f"<iq type='get' id='x' to='{ROOM}'><query xmlns='{MUC}#admin'>"
                        "<item affiliation='none'/></query></iq>", "bad-request"),
    ("config-bad-maxusers", f"<iq type='set' id='x' to='{ROOM}'><query xmlns='{MUC}#owner'>"
                            "<x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_maxusers'>"
                            "<value>lots</value></field></x></query></iq>", "not-acceptable"),
    ("config-bad-boolean", f"<iq type='set' id='x' to='{ROOM}'><query xmlns='{MUC}#owner'>"
                           "<x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_membersonly'>"
                           "<value>perhaps</value></field></x></query></iq>", "not-acceptable"),
    ("config-bad-level", f"<iq type='set' id='x' to='{ROOM}'><query xmlns='{MUC}#owner'>"
                         "<x xmlns='jabber:x:data' type='submit'><field var='xmppd#e2ee_policy'>"
                         "<value>maximum</value></field></x></query></iq>", "not-acceptable"),
    ("config-no-form", f"<iq type='set' id='x' to='{ROOM}'><query xmlns='{MUC}#owner'/></iq>", "bad-request"),
    ("invite-bad-jid", f"<message id='x' to='{ROOM}'><x xmlns='{MUC}#user'><invite to='@@'/></x></message>",
     "jid-malformed"),
    ("invite-no-to", f"<message id='x' to='{ROOM}'><x xmlns='{MUC}#user'><invite/></x></message>",
     "jid-malformed"),
    ("mam-bad-max", f"<iq type='set' id='x' to='{ROOM}'><query xmlns='urn:xmpp:mam:2'>"
                    "<set xmlns='http://jabber.org/protocol/rsm'><max>many</max></set></query></iq>", "bad-request"),
    ("mam-unknown-id", f"<iq type='set' id='x' to='{ROOM}'><query xmlns='urn:xmpp:mam:2'>"
                       "<set xmlns='http://jabber.org/protocol/rsm'><after>nope</after></set></query></iq>",
     "item-not-found"),
    ("unknown-room-message", "<message id='x' type='groupchat' to='nosuch@conference.localhost'><body>x</body>"
                             "</message>", "item-not-found"),
    ("unknown-room-iq", "<iq type='get' id='x' to='nosuch@conference.localhost'>"
                        "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>", "item-not-found"),
    ("unknown-namespace", f"<iq type='get' id='x' to='{ROOM}'><query xmlns='urn:example:nothing'/></iq>",
     "service-unavailable"),
    ("chat-to-room", f"<message id='x' type='chat' to='{ROOM}'><body>x</body></message>", "bad-request"),
    ("groupchat-to-occupant", f"<message id='x' type='groupchat' to='{ROOM}/Alice'><body>x</body></message>",
     "bad-request"),
    ("pm-to-nobody", f"<message id='x' type='chat' to='{ROOM}/Nobody'><body>x</body></message>",
     "item-not-found"),
    ("register-without-nick", f"<iq type='set' id='x' to='{ROOM}'><query xmlns='jabber:iq:register'>"
                              "<x xmlns='jabber:x:data' type='submit'/></query></iq>", "bad-request"),
    ("blank-nick", f"<presence id='x' to='{ROOM}/ '><x xmlns='{MUC}'/></presence>", "jid-malformed"),
]


@pytest.mark.parametrize("name, stanza, condition", CASES, ids=[c[0] for c in CASES])
async def test_bad_input_gets_the_right_error_with_text_and_the_stream_stays(server, pki, caplog, name, stanza,
                                                                            condition):
    caplog.set_level(logging.ERROR)
    alice = await raw_user(server, pki, "alice")
    try:
        await alice.send(f"<presence to='{ROOM}/Alice'><x xmlns='{MUC}'><history maxstanzas='lots'/></x></presence>")
        await alice.read_until(b"<subject")
        await alice.send(f"<iq type='set' id='cfg' to='{ROOM}'><query xmlns='{MUC}#owner'>"
                         "<x xmlns='jabber:x:data' type='submit'/></query></iq>")
        await alice.read_until(b"id='cfg'")
        alice.mark()
        await alice.send(stanza)
        got = await alice.read_until(rb"type='error'.*?</(iq|message|presence)>")
        err = re.search(rb"<error[^>]*>.*?</error>", got, re.S).group(0)
        assert f"<{condition} ".encode() in err, got
        assert b"<text " in err
        alice.mark()
        await alice.send("<iq type='get' id='alive'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert b"type='result'" in await alice.read_until(b"id='alive'.*?>")
    finally:
        await alice.close()
    assert not [r for r in caplog.records if r.name.startswith("xmppd") and r.exc_info]

"""StreamParser events, offsets and raw bytes (RFC 6120 §4.2, §4.6.1, §4.4)."""

from __future__ import annotations

import pytest

from xmppd.xml.parser import StreamClose, StreamOpen, StreamParser, Stanza

from .helpers import HEADER, MODES, NS_STREAM, S2S_HEADER, feed

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


@pytest.fixture(params=MODES)
def mode(request):
    return request.param


def stanzas(events):
    return [e for e in events if isinstance(e, Stanza)]


def test_header_yields_stream_open_with_clark_tag_attrs_and_default_ns(mode):
    _, events = feed(HEADER, mode)
    assert len(events) == 1
    (opened,) = events
    assert isinstance(opened, StreamOpen)
    assert opened.tag == "{%s}stream" % NS_STREAM
    assert opened.attrs == {"to": "example.com", "version": "1.0", XML_LANG: "en"}
    assert opened.default_ns == "jabber:client"
    assert opened.end == len(HEADER)


def test_header_without_xml_declaration_or_default_namespace_is_accepted(mode):
    data = b"<s:stream xmlns:s='http://etherx.jabber.org/streams' to='x'>"
    _, (opened,) = feed(data, mode)
    assert opened.default_ns is None
    assert opened.tag == "{%s}stream" % NS_STREAM
    assert opened.end == len(data)


def test_utf8_byte_order_mark_before_the_header_counts_in_offsets():
    data = b"\xef\xbb\xbf" + HEADER
    _, (opened,) = feed(data)
    assert opened.end == len(data)


def test_stanza_raw_bytes_are_identical_to_the_input(mode):
    stanza = (
        b"<message type=\"chat\"  id='a1'\n\tto = 'juliet@example.com/balcony' xml:lang=\"fr\">"
        b"<body>caf\xc3\xa9 &amp; &lt;3 &#x263A; <![CDATA[<raw>]]></body>\r\n"
        b"  <thread parent='x'>t1</thread></message>"
    )
    p, events = feed(HEADER + stanza, mode)
    (st,) = stanzas(events)
    assert st.raw == stanza
    assert st.end == len(HEADER) + len(stanza) == p.bytes_fed
    assert st.start_tag_len == stanza.index(b">") + 1
    assert st.self_contained
    el = st.element
    assert el.tag == "{jabber:client}message"
    assert list(el.attrib) == ["type", "id", "to", XML_LANG]
    assert el.attrib["to"] == "juliet@example.com/balcony"
    assert el.find("{jabber:client}body").text == "caf\u00e9 & <3 \u263a <raw>"
    assert el.find("{jabber:client}thread").attrib == {"parent": "x"}


def test_opaque_omemo_payload_is_relayed_byte_for_byte(mode):
    stanza = (
        b"<message to='romeo@example.net' from='juliet@example.com/balcony' type='chat' id='o1'>"
        b"<encrypted xmlns='eu.siacs.conversations.axolotl'>"
        b"<header sid='27183'><key rid='31415'>BASE64KEY==</key>"
        b"<key prekey=\"true\" rid='12321'>MORE/KEY+==</key><iv>BASE64IV==</iv>"
        b"<unknown-future-thing a='1'><deeper x=\"&quot;\"/></unknown-future-thing></header>"
        b"<payload>BASE64PAYLOAD</payload></encrypted>"
        b"<store xmlns='urn:xmpp:hints'/><body>I sent you an OMEMO encrypted message</body></message>"
    )
    _, events = feed(HEADER + stanza, mode)
    (st,) = stanzas(events)
    assert st.raw == stanza
    assert st.self_contained
    enc = st.element.find("{eu.siacs.conversations.axolotl}encrypted")
    assert enc is not None
    deeper = enc.find(".//{eu.siacs.conversations.axolotl}deeper")
    assert deeper.attrib == {"x": '"'}


def test_start_tag_len_allows_gt_inside_quoted_attribute_values(mode):
    stanza = b"<iq type='get' id=\"a>b\" to='x>y'><query xmlns='jabber:iq:roster'/></iq>"
    _, events = feed(HEADER + stanza, mode)
    (st,) = stanzas(events)
    assert st.raw == stanza
    assert st.raw[: st.start_tag_len] == b"<iq type='get' id=\"a>b\" to='x>y'>"
    assert st.element.attrib["id"] == "a>b"


def test_self_closing_stanza_has_start_tag_equal_to_raw(mode):
    stanza = b"<presence to='a>b' />"
    _, events = feed(HEADER + stanza + b"<presence/>", mode)
    first, second = stanzas(events)
    assert first.raw == stanza
    assert first.start_tag_len == len(stanza)
    assert first.end == len(HEADER) + len(stanza)
    assert second.raw == b"<presence/>"
    assert second.end == first.end + len(b"<presence/>")


def test_whitespace_keepalives_between_stanzas_produce_no_events(mode):
    data = HEADER + b" \n\t\r\n " + b"<presence/>" + b"   " + b" " + b"<iq id='1'/>" + b"\n \n"
    p, events = feed(data, mode)
    assert [type(e) for e in events] == [StreamOpen, Stanza, Stanza]
    assert [s.raw for s in stanzas(events)] == [b"<presence/>", b"<iq id='1'/>"]
    assert p.bytes_fed == len(data)


def test_stream_close_is_reported_with_its_end_offset(mode):
    data = HEADER + b"<presence/>" + b"\n</stream:stream >"
    _, events = feed(data, mode)
    assert [type(e) for e in events] == [StreamOpen, Stanza, StreamClose]
    assert events[-1].end == len(data)


def test_self_closing_stream_header_opens_and_closes():
    data = b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>"
    _, events = feed(data)
    assert [type(e) for e in events] == [StreamOpen, StreamClose]
    assert events[0].end == events[1].end == len(data)


def test_anything_after_stream_close_is_ignored(mode):
    data = HEADER + b"</stream:stream>" + b"<garbage & not xml <<<<" + b"\xff\xfe"
    p, events = feed(data, mode)
    assert [type(e) for e in events] == [StreamOpen, StreamClose]
    assert events[-1].end == len(HEADER) + len(b"</stream:stream>")
    assert p.feed(b"more junk") == []
    assert p.bytes_fed == len(data) + len(b"more junk")


def test_half_of_the_next_stanza_is_kept_until_the_rest_arrives(mode):
    first = b"<message to='a@b'><body>one</body></message>"
    second = b"<message to='c@d'><body>two &amp; \xe2\x82\xac</body></message>"
    cut = len(second) // 2 + 3
    p, events = feed(HEADER + first + second[:cut], mode)
    assert [s.raw for s in stanzas(events)] == [first]
    _, more = feed(second[cut:], mode, parser=p)
    (st,) = more
    assert st.raw == second
    assert st.end == len(HEADER) + len(first) + len(second)


def test_multibyte_character_split_across_feeds_is_reassembled():
    stanza = "<message><body>\u20ac\U0001f600</body></message>".encode()
    p, _ = feed(HEADER)
    cut = stanza.index(b"\xf0") + 2
    assert p.feed(stanza[:cut]) == []
    (st,) = p.feed(stanza[cut:])
    assert st.element[0].text == "\u20ac\U0001f600"
    assert st.raw == stanza


@pytest.mark.parametrize("with_declaration", [False, True])
def test_event_end_offsets_slice_the_bytes_after_a_restart_point_exactly(mode, with_declaration):
    # SASL success: the client pipelines its new stream header right after <auth/>
    auth = b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>"
    new_header = HEADER if with_declaration else HEADER[len(b"<?xml version='1.0'?>") :]
    after = new_header + b"<iq type='set' id='b'/>" + b"<presence/"
    data = HEADER + auth + after
    p = StreamParser(max_stanza_bytes=65536)
    restart = None
    remainder = b""
    for piece in _pieces(data, mode):
        if restart is not None:
            remainder += piece
            continue
        for ev in p.feed(piece):
            if isinstance(ev, Stanza) and ev.element.tag.endswith("}auth"):
                assert ev.raw == auth
                restart = ev
                # bytes of this piece beyond the restart point
                remainder = piece[len(piece) - (p.bytes_fed - ev.end) :]
                break
    assert restart is not None
    assert remainder == after
    q, events = feed(remainder, mode)
    assert [type(e) for e in events] == [StreamOpen, Stanza]
    assert events[1].raw == b"<iq type='set' id='b'/>"
    assert events[1].end == len(after) - len(b"<presence/")
    (st,) = q.feed(b">")
    assert st.raw == b"<presence/>"


def _pieces(data, mode):
    from .helpers import pieces

    return pieces(data, mode)


def test_peer_error_after_complete_events_is_raised_on_the_next_feed():
    # <starttls/> and then bytes that are not XML (e.g. a TLS ClientHello) in one read
    data = HEADER + b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>" + b"\x16\x03\x01\x02\x00\x01"
    p = StreamParser(max_stanza_bytes=65536)
    events = p.feed(data)
    assert [type(e) for e in events] == [StreamOpen, Stanza]
    assert events[1].end == len(data) - 6
    from xmppd.errors import StreamError, StreamErrorCondition

    with pytest.raises(StreamError) as info:
        p.feed(b"")
    assert info.value.condition is StreamErrorCondition.NOT_WELL_FORMED


def test_bytes_fed_counts_every_byte_given(mode):
    data = HEADER + b"<presence/>  <pres"
    p, _ = feed(data, mode)
    assert p.bytes_fed == len(data)


def test_element_tree_keeps_text_tail_and_namespaces():
    stanza = (
        b"<message><body>hello</body>between<x xmlns='urn:x' xml:lang='de' a='1'>in<y>deep</y>after-y</x>"
        b"<z xmlns=''/></message>"
    )
    _, events = feed(HEADER + stanza)
    el = stanzas(events)[0].element
    body, x, z = list(el)
    assert body.tag == "{jabber:client}body" and body.text == "hello" and body.tail == "between"
    assert x.tag == "{urn:x}x" and x.attrib == {XML_LANG: "de", "a": "1"} and x.text == "in"
    y = x[0]
    assert y.tag == "{urn:x}y" and y.text == "deep" and y.tail == "after-y"
    assert z.tag == "z"
    assert el.tail is None


def test_max_stanza_bytes_can_be_raised_after_authentication():
    big = b"<message><body>" + b"x" * 5000 + b"</body></message>"
    p, _ = feed(HEADER, max_stanza_bytes=1000)
    p.max_stanza_bytes = 10000
    (st,) = p.feed(big)
    assert st.raw == big


def test_parser_does_not_hold_bytes_of_finished_stanzas():
    p, _ = feed(HEADER)
    for _ in range(200):
        p.feed(b"<message to='a@b'><body>" + b"y" * 500 + b"</body></message>   ")
    assert p.stats().buffered < 100  # white-box: only the unfinished tail is buffered


# --- self_contained: may the raw bytes be relayed into another stream? -------------


def test_stanza_using_a_prefix_declared_on_the_header_is_not_self_contained(mode):
    stanza = b"<db:result from='other.example' to='example.com'>KEY</db:result>"
    _, events = feed(S2S_HEADER + stanza + b"<message/>", mode)
    first, second = stanzas(events)
    assert first.element.tag == "{jabber:server:dialback}result"
    assert first.raw == stanza
    assert not first.self_contained
    assert second.self_contained
    assert second.element.tag == "{jabber:server}message"


def test_stream_error_from_the_peer_uses_the_header_prefix_so_is_not_self_contained():
    _, events = feed(HEADER + b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>")
    (st,) = stanzas(events)
    assert st.element.tag == "{%s}error" % NS_STREAM
    assert not st.self_contained


def test_child_using_a_header_prefix_makes_the_stanza_not_self_contained():
    _, events = feed(S2S_HEADER + b"<message><body>x</body><db:verify/></message>")
    assert not stanzas(events)[0].self_contained


def test_attribute_using_a_header_prefix_makes_the_stanza_not_self_contained():
    _, events = feed(S2S_HEADER + b"<message><x xmlns='urn:x' db:type='y'/></message>")
    (st,) = stanzas(events)
    assert st.element[0].attrib == {"{jabber:server:dialback}type": "y"}
    assert not st.self_contained


def test_prefix_redeclared_inside_the_stanza_keeps_it_self_contained(mode):
    stanza = (
        b"<message xmlns:db='jabber:server:dialback'><db:x db:a='1'/></message>"
        b"<message><p:y xmlns:p='urn:p' p:z='2'/></message>"
    )
    _, events = feed(S2S_HEADER + stanza, mode)
    assert [s.self_contained for s in stanzas(events)] == [True, True]


def test_prefix_declared_on_a_sibling_does_not_count_for_a_later_element():
    stanza = b"<message><a xmlns:db='jabber:server:dialback'/><db:x/></message>"
    _, events = feed(S2S_HEADER + stanza)
    assert not stanzas(events)[0].self_contained


def test_xml_lang_and_inherited_default_namespace_keep_a_stanza_self_contained():
    _, events = feed(HEADER + b"<message xml:lang='en'><body xml:lang='de'>x</body></message>")
    assert stanzas(events)[0].self_contained


def test_release_idle_between_stanzas_then_rebuild_gives_the_same_events_and_offsets():
    import random

    from xmppd.xml.parser import StreamParser as SP

    hdr = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:db='jabber:server:dialback' "
           b"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")
    data = b"".join(b"<message to='a@b' id='%d'><body>hi %d</body><db:x/></message> \n" % (i, i)
                    for i in range(40)) + b"</stream:stream>"
    released, ref = SP(max_stanza_bytes=10000), SP(max_stanza_bytes=10000)
    got, want = released.feed(hdr), ref.feed(hdr)
    rng = random.Random(7)
    i, releases = 0, 0
    while i < len(data):
        n = rng.randint(1, 50)
        got += released.feed(data[i:i + n])
        want += ref.feed(data[i:i + n])
        i += n
        releases += released.release_idle()
    assert releases >= 2
    key = lambda e: (type(e).__name__, e.end, getattr(e, "raw", None), getattr(e, "self_contained", None),
                     getattr(e, "start_tag_len", None))
    assert [key(e) for e in got] == [key(e) for e in want] and len(got) == 42
    # mid-stanza nothing is released; an error after a rebuild reports the absolute byte offset
    a, b = SP(max_stanza_bytes=10000), SP(max_stanza_bytes=10000)
    for p in (a, b):
        p.feed(hdr + b"<message><body>")
    assert not a.release_idle()
    a.feed(b"</body></message>")
    b.feed(b"</body></message>")
    assert a.release_idle()
    errors = []
    for p in (a, b):
        try:
            p.feed(b"<iq><x></iq>")
        except Exception as exc:  # noqa: BLE001
            errors.append(str(exc))
    assert len(errors) == 2 and errors[0] == errors[1]

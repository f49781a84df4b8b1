"""Writer: XMPP-style serialization, stream header/error, start-tag rewriting."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from xmppd.errors import NS_STREAMS, StreamErrorCondition
from xmppd.xml.parser import StreamClose, StreamOpen, Stanza
from xmppd.xml.writer import STREAM_CLOSE, rewrite_start_tag, serialize, stream_error, stream_header

from .helpers import HEADER, NS_STREAM, S2S_HEADER, canon, feed

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def reparse(data: bytes, header: bytes = HEADER) -> Stanza:
    _, events = feed(header + data)
    (st,) = [e for e in events if isinstance(e, Stanza)]
    assert st.raw == data
    return st


def E(tag, attrib=None, text=None, tail=None, children=()):
    el = ET.Element(tag, attrib or {})
    el.text = text
    el.tail = tail
    el.extend(children)
    return el


# --- serialize ----------------------------------------------------------------------


def test_default_namespace_elements_are_written_without_prefix_or_xmlns():
    el = E("{jabber:client}message", {"to": "a@b", "type": "chat"}, children=[E("{jabber:client}body", text="hi")])
    assert serialize(el) == b"<message to='a@b' type='chat'><body>hi</body></message>"


def test_child_in_another_namespace_declares_it_once_and_never_uses_ns0():
    el = E(
        "{jabber:client}iq",
        {"type": "result", "id": "1"},
        children=[
            E("{jabber:iq:roster}query", children=[E("{jabber:iq:roster}item", {"jid": "x@y"}, children=[E("{jabber:iq:roster}group", text="G")])]),
        ],
    )
    out = serialize(el)
    assert out == (
        b"<iq type='result' id='1'><query xmlns='jabber:iq:roster'><item jid='x@y'><group>G</group></item></query></iq>"
    )
    assert b"ns0" not in out


def test_element_back_in_the_stream_namespace_inside_a_foreign_one_redeclares_it():
    el = E("{urn:x}x", children=[E("{jabber:client}message")])
    assert serialize(el) == b"<x xmlns='urn:x'><message xmlns='jabber:client'/></x>"


def test_element_without_namespace_inside_default_namespace_gets_empty_xmlns():
    assert serialize(E("{jabber:client}a", children=[E("b")])) == b"<a><b xmlns=''/></a>"


def test_plain_tag_with_xmlns_attribute_means_that_namespace():
    assert serialize(ET.Element("bind", xmlns="urn:ietf:params:xml:ns:xmpp-bind")) == (
        b"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
    )


def test_xml_lang_is_written_as_xml_prefix():
    assert serialize(E("{jabber:client}message", {XML_LANG: "de"})) == b"<message xml:lang='de'/>"


def test_streams_namespace_elements_use_the_stream_prefix():
    features = E(
        f"{{{NS_STREAM}}}features",
        children=[E("{urn:ietf:params:xml:ns:xmpp-tls}starttls", children=[E("{urn:ietf:params:xml:ns:xmpp-tls}required")])],
    )
    out = serialize(features)
    assert out == (
        b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>"
    )
    assert canon(reparse(out).element) == canon(features)


def test_text_and_attributes_are_escaped():
    el = E("{jabber:client}message", {"id": "a&b<c>d\"e'f\ng\rh\ti"}, text="1 < 2 & 3 > 2 ]]>")
    out = serialize(el)
    assert out == (
        b"<message id='a&amp;b&lt;c&gt;d&quot;e&apos;f&#10;g&#13;h&#9;i'>1 &lt; 2 &amp; 3 &gt; 2 ]]&gt;</message>"
    )
    assert canon(reparse(out).element) == canon(el)


def test_text_and_tail_are_preserved():
    el = E(
        "{jabber:client}message",
        text="before",
        children=[E("{jabber:client}b", text="bold", tail=" after b "), E("{urn:x}i", tail="end")],
    )
    assert serialize(el) == b"<message>before<b>bold</b> after b <i xmlns='urn:x'/>end</message>"


def test_empty_elements_are_self_closed():
    assert serialize(E("{jabber:client}presence")) == b"<presence/>"
    assert serialize(E("{jabber:client}presence", text="")) == b"<presence/>"


def test_namespaced_attribute_gets_a_declared_prefix():
    el = E("{jabber:client}message", {"{urn:a}x": "1", "{urn:b}y": "2"})
    out = serialize(el)
    assert b"ns0" not in out
    assert canon(reparse(out).element) == canon(el)


def test_default_ns_parameter_selects_the_stream_namespace():
    el = E("{jabber:server}message", children=[E("{jabber:server}body", text="s2s")])
    out = serialize(el, default_ns="jabber:server")
    assert out == b"<message><body>s2s</body></message>"
    assert canon(reparse(out, S2S_HEADER).element) == canon(el)


def test_characters_xml_cannot_carry_raise_value_error():
    with pytest.raises(ValueError):
        serialize(E("{jabber:client}message", text="nul\x00"))
    with pytest.raises(ValueError):
        serialize(E("{jabber:client}message", {"id": "\x1b"}))


def test_comments_cannot_be_serialized():
    with pytest.raises(ValueError):
        serialize(ET.Comment("no"))


@pytest.mark.parametrize(
    "raw",
    [
        b"<message to='juliet@example.com' type='chat' id='m1' xml:lang='en'><body>Wherefore art thou?</body>"
        b"<active xmlns='http://jabber.org/protocol/chatstates'/><request xmlns='urn:xmpp:receipts'/></message>",
        b"<iq type='result' id='r'><query xmlns='jabber:iq:roster' ver='v1'><item jid='a@b' name='A &amp; B'"
        b" subscription='both'><group>Friends</group></item></query></iq>",
        b"<message><encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'><key rid='2'>K==</key>"
        b"<iv>IV</iv></header><payload>P</payload></encrypted><body>t&lt;ext</body>tail&gt;</message>",
        "<message><body>caf\u00e9 \U0001f600 \u263a</body></message>".encode(),
    ],
)
def test_serialize_round_trips_through_the_parser(raw):
    parsed = reparse(raw).element
    out = serialize(parsed)
    again = reparse(out).element
    assert canon(again) == canon(parsed)
    assert serialize(again) == out


# --- stream header, close, error ----------------------------------------------------


def test_stream_header_bytes():
    assert stream_header(from_="example.com", id_="abc") == (
        b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
        b" from='example.com' id='abc' version='1.0' xml:lang='en'>"
    )


def test_stream_header_escapes_values_and_parses_back():
    out = stream_header(from_="ex'ample", to="a<b", id_="i&d", ns="jabber:server", lang="de")
    _, events = feed(out)
    (opened,) = events
    assert isinstance(opened, StreamOpen)
    assert opened.default_ns == "jabber:server"
    assert opened.attrs == {"from": "ex'ample", "to": "a<b", "id": "i&d", "version": "1.0", XML_LANG: "de"}
    assert opened.end == len(out)


def test_stream_header_omits_absent_attributes():
    out = stream_header(from_=None, version=None, lang=None)
    assert out.endswith(b"xmlns:stream='http://etherx.jabber.org/streams'>")


def test_stream_close_ends_a_parsed_stream():
    _, events = feed(stream_header(from_="x") + STREAM_CLOSE)
    assert isinstance(events[-1], StreamClose)


def test_stream_error_bytes():
    assert stream_error(StreamErrorCondition.NOT_WELL_FORMED) == (
        b"<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
    )
    assert stream_error(StreamErrorCondition.POLICY_VIOLATION, "too <big>") == (
        b"<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        b"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>too &lt;big&gt;</text></stream:error>"
    )


def test_stream_error_parses_as_a_streams_namespace_element():
    out = stream_error(StreamErrorCondition.HOST_UNKNOWN, "no such host")
    el = reparse(out).element
    assert el.tag == f"{{{NS_STREAM}}}error"
    assert [c.tag for c in el] == [f"{{{NS_STREAMS}}}host-unknown", f"{{{NS_STREAMS}}}text"]
    assert el[1].text == "no such host"


# --- rewrite_start_tag --------------------------------------------------------------


def rewrite(raw: bytes, attrs: dict[str, str]) -> bytes:
    st = reparse(raw)
    out = rewrite_start_tag(st.raw, st.start_tag_len, attrs)
    reparse(out)  # still well-formed
    return out


def test_rewrite_replaces_an_existing_attribute_keeping_everything_else():
    raw = b"<message to='romeo@example.net' from='spoof@evil' id=\"x\"><body>hi</body></message>"
    assert rewrite(raw, {"from": "juliet@example.com/balcony"}) == (
        b"<message to='romeo@example.net' from='juliet@example.com/balcony' id=\"x\"><body>hi</body></message>"
    )


def test_rewrite_keeps_the_double_quote_style():
    raw = b'<message from="a"/>'
    assert rewrite(raw, {"from": "b"}) == b'<message from="b"/>'


def test_rewrite_adds_a_missing_attribute_after_the_last_one():
    assert rewrite(b"<message to='a'><body/></message>", {"from": "b"}) == b"<message to='a' from='b'><body/></message>"
    assert rewrite(b"<message><body/></message>", {"from": "b"}) == b"<message from='b'><body/></message>"


def test_rewrite_handles_self_closing_tags_with_and_without_space():
    assert rewrite(b"<presence/>", {"from": "a@b/c"}) == b"<presence from='a@b/c'/>"
    assert rewrite(b"<presence type='probe' />", {"from": "a"}) == b"<presence type='probe' from='a' />"


def test_rewrite_handles_gt_inside_quoted_values():
    raw = b"<message id='a>b' to=\"c>d\"><body>x</body></message>"
    assert rewrite(raw, {"to": "e", "from": "f>g"}) == (
        b"<message id='a>b' to=\"e\" from='f&gt;g'><body>x</body></message>"
    )


def test_rewrite_handles_whitespace_and_newlines_around_the_equals_sign():
    raw = b"<message\n  to\n=\t'a'\r\n from =  \"b\"\n>text</message>"
    assert rewrite(raw, {"from": "c", "to": "d"}) == b"<message\n  to\n=\t'd'\r\n from =  \"c\"\n>text</message>"


def test_rewrite_escapes_values():
    out = rewrite(b"<message/>", {"from": "a'b\"c&d<e\nf"})
    assert out == b"<message from='a&apos;b&quot;c&amp;d&lt;e&#10;f'/>"
    assert reparse(out).element.attrib["from"] == "a'b\"c&d<e\nf"


def test_rewrite_leaves_qualified_attributes_with_the_same_local_name_alone():
    raw = b"<message xmlns:x='urn:x' x:from='keep' xml:lang='en'/>"
    out = rewrite(raw, {"from": "new", "lang": "de"})
    assert out == b"<message xmlns:x='urn:x' x:from='keep' xml:lang='en' from='new' lang='de'/>"


def test_rewrite_leaves_the_payload_byte_for_byte():
    payload = b"<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/><payload>\xe2\x82\xac</payload></encrypted>"
    raw = b"<message to='x'>" + payload + b"</message>"
    out = rewrite(raw, {"from": "y"})
    assert out == b"<message to='x' from='y'>" + payload + b"</message>"


def test_rewrite_with_nothing_to_change_returns_the_same_bytes():
    raw = b"<message to='x'/>"
    assert rewrite_start_tag(raw, len(raw), {}) == raw


def test_rewrite_rejects_qualified_or_invalid_names():
    with pytest.raises(ValueError):
        rewrite_start_tag(b"<a/>", 4, {"xml:lang": "en"})
    with pytest.raises(ValueError):
        rewrite_start_tag(b"<a/>", 4, {"a b": "x"})


def test_rewrite_rejects_a_start_tag_length_that_is_not_a_start_tag():
    with pytest.raises(ValueError):
        rewrite_start_tag(b"<a x='1'><b/></a>", 5, {"from": "y"})


@pytest.mark.parametrize("raw,expected", [
    (b"<message>x</message>", b"<message from='a@b/c'>x</message>"),
    (b"<message to='x' >y</message>", b"<message to='x' from='a@b/c' >y</message>"),
    (b"<message to='x'/>", b"<message to='x' from='a@b/c'/>"),
    (b"<message to=\"x\"\n\t/>", b"<message to=\"x\" from='a@b/c'\n\t/>"),
    (b"<message to='a>b/'><b/></message>", b"<message to='a>b/' from='a@b/c'><b/></message>"),
])
def test_rewrite_fast_path_for_an_absent_attribute_inserts_after_the_last_attribute(raw, expected):
    end = raw.index(b">", raw.index(b"'") + 3 if b"a>b" in raw else 0) + 1
    assert rewrite_start_tag(raw, end, {"from": "a@b/c"}) == expected

"""StreamParser peer errors: well-formedness, restricted XML (RFC 6120 §11.1), limits."""

from __future__ import annotations

import time

import pytest

from xmppd.errors import StreamErrorCondition as C
from xmppd.xml import parser as parser_module
from xmppd.xml.parser import MAX_HEADER_BYTES, StreamParser

from .helpers import HEADER, MODES, assert_condition, feed


@pytest.fixture(params=MODES)
def mode(request):
    return request.param


# --- not-well-formed ----------------------------------------------------------------


def test_mismatched_end_tag_is_not_well_formed(mode):
    assert_condition(HEADER + b"<message><body>x</message></body>", C.NOT_WELL_FORMED, mode)


def test_unbound_prefix_is_not_well_formed(mode):
    assert_condition(HEADER + b"<message><foo:bar/></message>", C.NOT_WELL_FORMED, mode)


def test_invalid_utf8_is_not_well_formed(mode):
    assert_condition(HEADER + b"<message><body>\xff\xfe</body></message>", C.NOT_WELL_FORMED, mode)


def test_overlong_utf8_encoding_is_not_well_formed():
    assert_condition(HEADER + b"<message><body>\xc0\xbc</body></message>", C.NOT_WELL_FORMED)


def test_duplicate_attribute_is_not_well_formed():
    assert_condition(HEADER + b"<message to='a' to='b'/>", C.NOT_WELL_FORMED)


def test_text_before_the_header_is_not_well_formed():
    assert_condition(b"hello" + HEADER, C.NOT_WELL_FORMED)


def test_undefined_entity_reference_is_not_well_formed(mode):
    assert_condition(HEADER + b"<message><body>&nbsp;</body></message>", C.NOT_WELL_FORMED, mode)


def test_second_xml_declaration_inside_the_stream_is_not_well_formed():
    assert_condition(HEADER + b"<?xml version='1.0'?>", C.NOT_WELL_FORMED)


@pytest.mark.parametrize("codec, bom", [("utf-16-be", b"\xfe\xff"), ("utf-16-le", b"\xff\xfe")])
def test_utf16_stream_with_byte_order_mark_is_unsupported_encoding(mode, codec, bom):
    assert_condition(bom + HEADER[21:].decode().encode(codec), C.UNSUPPORTED_ENCODING, mode)


@pytest.mark.parametrize("codec", ["utf-16-be", "utf-16-le", "utf-32-be", "utf-32-le"])
def test_utf16_or_utf32_stream_without_byte_order_mark_is_unsupported_encoding(mode, codec):
    assert_condition(HEADER[21:].decode().encode(codec), C.UNSUPPORTED_ENCODING, mode)


# --- restricted-xml (RFC 6120 §11.1) ------------------------------------------------


def test_comment_inside_stanza_is_restricted_xml(mode):
    assert_condition(HEADER + b"<message><!-- hi --></message>", C.RESTRICTED_XML, mode)


def test_comment_before_the_header_is_restricted_xml(mode):
    assert_condition(b"<?xml version='1.0'?><!-- hi -->" + HEADER[21:], C.RESTRICTED_XML, mode)


def test_comment_between_stanzas_is_restricted_xml(mode):
    assert_condition(HEADER + b"<presence/><!--x--><presence/>", C.RESTRICTED_XML, mode)


def test_processing_instruction_inside_stanza_is_restricted_xml(mode):
    assert_condition(HEADER + b"<message><?php echo 1 ?></message>", C.RESTRICTED_XML, mode)


def test_processing_instruction_before_the_header_is_restricted_xml():
    assert_condition(b"<?xml-stylesheet href='x'?>" + HEADER[21:], C.RESTRICTED_XML)


def test_doctype_before_the_header_is_restricted_xml(mode):
    assert_condition(b"<?xml version='1.0'?><!DOCTYPE stream:stream>" + HEADER[21:], C.RESTRICTED_XML, mode)


def test_doctype_inside_a_stanza_is_restricted_xml():
    assert_condition(HEADER + b"<message><!DOCTYPE x></message>", C.RESTRICTED_XML)


def test_entity_declaration_is_restricted_xml(mode):
    data = b"<!DOCTYPE s [<!ENTITY e 'boom'>]>" + HEADER[21:] + b"<message><body>&e;</body></message>"
    assert_condition(data, C.RESTRICTED_XML, mode)


def test_external_entity_is_restricted_xml():
    data = b"<!DOCTYPE s [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>" + HEADER[21:] + b"<m>&e;</m>"
    assert_condition(data, C.RESTRICTED_XML)


def test_external_dtd_is_restricted_xml():
    assert_condition(b"<!DOCTYPE s SYSTEM 'http://example.com/x.dtd'>" + HEADER[21:], C.RESTRICTED_XML)


def test_billion_laughs_fails_fast_with_restricted_xml(mode):
    lol = [b"<!ENTITY lol0 'lol'>"]
    for i in range(1, 10):
        lol.append(b"<!ENTITY lol%d '%s'>" % (i, b"".join(b"&lol%d;" % (i - 1) for _ in range(10))))
    data = b"<?xml version='1.0'?><!DOCTYPE lolz [" + b"".join(lol) + b"]>" + HEADER[21:] + b"<m>&lol9;</m>"
    started = time.perf_counter()
    assert_condition(data, C.RESTRICTED_XML, mode)
    assert time.perf_counter() - started < 1.0


def test_cdata_section_is_allowed():
    _, events = feed(HEADER + b"<message><body><![CDATA[a<b]]></body></message>")
    assert events[1].element[0].text == "a<b"


# --- unsupported-encoding (RFC 6120 §11.6) ------------------------------------------


@pytest.mark.parametrize("encoding", [b"ISO-8859-1", b"UTF-16", b"us-ascii"])
def test_xml_declaration_with_another_encoding_is_unsupported_encoding(mode, encoding):
    data = b"<?xml version='1.0' encoding='" + encoding + b"'?>" + HEADER[21:]
    assert_condition(data, C.UNSUPPORTED_ENCODING, mode)


def test_xml_declaration_with_utf8_encoding_in_any_case_is_accepted():
    _, events = feed(b"<?xml version='1.0' encoding='utf-8'?>" + HEADER[21:])
    assert len(events) == 1


# --- invalid-namespace, bad-format --------------------------------------------------


def test_first_element_not_stream_in_streams_namespace_is_invalid_namespace(mode):
    assert_condition(b"<stream xmlns='jabber:client'>", C.INVALID_NAMESPACE, mode)
    assert_condition(b"<stream:stream xmlns:stream='urn:wrong' xmlns='jabber:client'>", C.INVALID_NAMESPACE, mode)
    assert_condition(b"<stream:features xmlns:stream='http://etherx.jabber.org/streams'>", C.INVALID_NAMESPACE)


def test_text_between_stanzas_is_bad_format(mode):
    assert_condition(HEADER + b"<presence/> hello <presence/>", C.BAD_FORMAT, mode)


def test_escaped_text_between_stanzas_is_bad_format():
    assert_condition(HEADER + b"  &amp;", C.BAD_FORMAT)


# --- policy-violation: sizes and depth ----------------------------------------------


def test_stanza_larger_than_max_stanza_bytes_is_policy_violation(mode):
    stanza = b"<message><body>" + b"x" * 200 + b"</body></message>"
    assert_condition(HEADER + stanza, C.POLICY_VIOLATION, mode, max_stanza_bytes=100)


def test_stanza_of_exactly_max_stanza_bytes_is_accepted(mode):
    stanza = b"<message><body>" + b"x" * 200 + b"</body></message>"
    _, events = feed(HEADER + stanza, mode, max_stanza_bytes=len(stanza))
    assert events[1].raw == stanza


def test_endless_stanza_is_cut_off_while_it_accumulates():
    p, _ = feed(HEADER + b"<message><body>", max_stanza_bytes=10_000)
    from xmppd.errors import StreamError

    with pytest.raises(StreamError) as info:
        for _ in range(1000):
            p.feed(b"z" * 1024)
    assert info.value.condition is C.POLICY_VIOLATION
    assert p.bytes_fed <= len(HEADER) + 10_000 + 1024


def test_endless_start_tag_is_cut_off_while_it_accumulates():
    p, _ = feed(HEADER + b"<message to='", max_stanza_bytes=10_000)
    from xmppd.errors import StreamError

    with pytest.raises(StreamError) as info:
        for _ in range(1000):
            p.feed(b"a" * 1024)
    assert info.value.condition is C.POLICY_VIOLATION
    assert p.bytes_fed <= len(HEADER) + 10_000 + 1024


def test_one_huge_read_is_checked_while_it_is_parsed():
    data = HEADER + b"<message><body>" + b"q" * 5_000_000
    assert_condition(data, C.POLICY_VIOLATION, max_stanza_bytes=10_000)


def test_header_larger_than_max_header_bytes_is_policy_violation(mode):
    data = HEADER[:-1] + b" id='" + b"i" * MAX_HEADER_BYTES + b"'>"
    assert_condition(data, C.POLICY_VIOLATION, "whole" if mode == "bytewise" else mode)


def test_endless_header_is_cut_off_at_max_header_bytes():
    p = StreamParser(max_stanza_bytes=65536)
    from xmppd.errors import StreamError

    with pytest.raises(StreamError) as info:
        p.feed(HEADER[:-1] + b" id='")
        for _ in range(100):
            p.feed(b"i" * 100)
    assert info.value.condition is C.POLICY_VIOLATION
    assert p.bytes_fed <= MAX_HEADER_BYTES + 104


def test_nesting_deeper_than_max_depth_is_policy_violation(mode):
    ok = b"<a>" * 3 + b"</a>" * 3
    _, events = feed(HEADER + ok, mode, max_depth=3)
    assert events[1].raw == ok
    assert_condition(HEADER + b"<a>" * 4 + b"</a>" * 4, C.POLICY_VIOLATION, mode, max_depth=3)


def test_default_max_depth_stops_a_deeply_nested_bomb():
    assert_condition(HEADER + b"<a>" * 100_000, C.POLICY_VIOLATION)


def test_whitespace_run_between_stanzas_is_bounded(monkeypatch, mode):
    monkeypatch.setattr(parser_module, "MAX_WHITESPACE_RUN", 50)
    _, events = feed(HEADER + b" " * 50 + b"<presence/>" + b"\n" * 50 + b"<presence/>", mode)
    assert len(events) == 3
    assert_condition(HEADER + b"<presence/>" + b" " * 51, C.POLICY_VIOLATION, mode)


def test_whitespace_between_stanzas_is_not_buffered():
    p, _ = feed(HEADER + b"<presence/>")
    for _ in range(100):
        p.feed(b" " * 1000)
    assert p.stats().buffered == 0  # white-box: keepalives are counted, never held


def test_partial_start_tag_between_stanzas_is_bounded_by_max_stanza_bytes():
    data = HEADER + b"   <message" + b" a='b'" * 100
    assert_condition(data, C.POLICY_VIOLATION, "chunks7", max_stanza_bytes=300)


def test_constructor_rejects_nonsense_limits():
    with pytest.raises(ValueError):
        StreamParser(max_stanza_bytes=0)

"""Bounded memory and linear work in the stream parser, whatever the peer sends.

No timings: the work is counted (``ParserStats.bytes_scanned``: bytes expat had
to look at, the incomplete token it re-scans included) and the memory traced.
"""

from __future__ import annotations

import gc
import random
import tracemalloc

import pytest

from xmppd.errors import StreamError
from xmppd.errors import StreamErrorCondition as C
from xmppd.xml import parser as parser_module
from xmppd.xml.parser import MAX_DISTINCT_NAMES, MAX_NAME_BYTES, Stanza, StreamOpen, StreamParser

from .helpers import HEADER, S2S_HEADER, canon, feed


def _parser(header: bytes = HEADER, **kw) -> StreamParser:
    p = StreamParser(max_stanza_bytes=kw.pop("max_stanza_bytes", 1 << 20), **kw)
    (opened,) = p.feed(header)
    assert isinstance(opened, StreamOpen)
    return p


def _trickle(p: StreamParser, data: bytes, size: int) -> list:
    events = []
    for i in range(0, len(data), size):
        events += p.feed(data[i : i + size])
    return events


# ----------------------------------------------------------------- linear work

BIG = 40_000
TRICKLED = {
    "long attribute value": b"<message to='a@b' x='" + b"y" * BIG + b"'><body>hi</body></message>",
    "'>' all through an attribute value": b"<message to='a@b' x='" + b">" * BIG + b"'/>",
    "thousands of attributes": b"<message " + b"".join(b"a%d=\"'\" " % i for i in range(BIG // 10)) + b"/>",
    "long end tag": b"<message>" + b"</message" + b" " * BIG + b">",
    "long text": b"<message><body>" + b"t" * BIG + b"</body></message>",
    "long child start tag": b"<message><x y='" + b"\"" * BIG + b"'/></message>",
}


@pytest.mark.parametrize("record", [1, 4])
@pytest.mark.parametrize("case", list(TRICKLED))
def test_trickled_stanza_costs_expat_work_linear_in_its_size(case, record):
    stanza = TRICKLED[case]
    whole = _parser()
    (want,) = whole.feed(stanza)
    p = _parser()
    base = p.stats().bytes_scanned
    (got,) = _trickle(p, stanza, record)
    assert got.raw == want.raw == stanza and canon(got.element) == canon(want.element)
    scanned = p.stats().bytes_scanned - base
    # re-scanning the incomplete token on every record would be ~len^2/(2*record)
    assert scanned <= 4 * len(stanza), (scanned, len(stanza))
    assert p.stats().parse_calls - 1 <= 2 * len(stanza) // 1000 + 64


def test_trickled_stream_header_costs_linear_work():
    header = HEADER[:-1] + b" " + b"x='" + b"v" * 3000 + b"'>"
    p = StreamParser(max_stanza_bytes=65536)
    (opened,) = _trickle(p, header, 1)
    assert opened.end == len(header)
    assert p.stats().bytes_scanned <= 4 * len(header)


@pytest.mark.parametrize("markup, condition", [
    (b"<!-- " + b">" * BIG + b" -->", C.RESTRICTED_XML),
    (b"<?pi " + b">" * BIG + b" ?>", C.RESTRICTED_XML),
    (b"&" + b"e" * BIG + b";", C.NOT_WELL_FORMED),
])
def test_trickled_restricted_or_bad_markup_costs_linear_work_and_still_fails(markup, condition):
    p = _parser()
    base = p.stats().bytes_scanned
    data = b"<message><body>" + markup
    with pytest.raises(StreamError) as info:
        _trickle(p, data, 1)
        p.feed(b"")
    assert info.value.condition is condition
    assert p.stats().bytes_scanned - base <= 4 * len(data)


def test_no_event_is_held_back_by_coalescing():
    """Each event comes out of the very feed() that brings its last byte."""
    rng = random.Random(5)
    body = b"".join([
        b"<message to='a@b' x='>>' y=\"'>\"><body>" + b"z" * 300 + b" &amp; &#x263A;</body></message>",
        b"  <presence/>\n",
        b"<iq type='get' id='" + b"i" * 200 + b"'><q xmlns='urn:x'><![CDATA[ > ]]></q></iq>",
        b"</stream:stream>",
    ])
    data = HEADER + body
    p = StreamParser(max_stanza_bytes=65536)
    pos = 0
    ends = []
    while pos < len(data):
        n = rng.choice([1, 1, 2, 3, 7, 40])
        for ev in p.feed(data[pos : pos + n]):
            assert pos < ev.end <= pos + n, "event delivered late"
            ends.append(ev.end)
        pos += n
    _, whole = feed(data)
    assert ends == [ev.end for ev in whole]


@pytest.mark.parametrize("seed", range(6))
def test_random_record_sizes_give_the_same_events_as_one_read(seed):
    rng = random.Random(seed)
    body = b"".join(
        rng.choice([
            b"<message id='%d' a='%s'><body>%s</body></message>" % (i, b">" * rng.randint(0, 90), b"x" * rng.randint(0, 300)),
            b" \n",
            b"<presence xmlns:p='urn:p'><p:c p:v='1'/></presence>",
            b"<iq id='%d'><x xmlns='urn:%d'/></iq>" % (i, i),
        ])
        for i in range(80)
    )
    data = HEADER + body
    _, want = feed(data)
    p = StreamParser(max_stanza_bytes=65536)
    got, pos = [], 0
    while pos < len(data):
        n = rng.randint(1, 60)
        got += p.feed(data[pos : pos + n])
        pos += n
    key = lambda e: (type(e).__name__, e.end, getattr(e, "raw", None), getattr(e, "self_contained", None))
    assert [key(e) for e in got] == [key(e) for e in want]


# --------------------------------------------------------------- name tables

def _fresh_names(n: int, start: int = 0):
    for i in range(start, start + n):
        yield b"<message to='a@b' f%d='1'><e%d xmlns='urn:fresh:%d'/><body>x</body></message>" % (i, i, i)


def test_name_table_stays_bounded_over_many_stanzas_with_fresh_names():
    p = _parser()
    most = 0
    for stanza in _fresh_names(20_000):
        (ev,) = p.feed(stanza)
        assert ev.raw == stanza
        s = p.stats()
        most = max(most, s.names)
        assert s.name_bytes <= MAX_NAME_BYTES + len(stanza)
    assert most <= MAX_DISTINCT_NAMES + 8
    assert p.stats().name_rebuilds >= 20_000 * 2 // MAX_DISTINCT_NAMES - 2


def test_memory_of_a_stream_with_fresh_names_stays_flat_and_is_freed_with_the_parser():
    p = _parser()
    gc.collect()
    gc.disable()  # freeing must not wait for the cycle collector
    tracemalloc.start()
    try:
        for stanza in _fresh_names(2_000):
            p.feed(stanza)
        warm = tracemalloc.get_traced_memory()[0]
        for stanza in _fresh_names(20_000, 2_000):
            p.feed(stanza)
        grown = tracemalloc.get_traced_memory()[0] - warm
        # unbounded tables would hold ~300 bytes per name: 60 000 names, ~18 MB
        assert grown < 1_000_000, grown
        before_drop = tracemalloc.get_traced_memory()[0]
        del p
        assert tracemalloc.get_traced_memory()[0] < before_drop - 50_000
    finally:
        tracemalloc.stop()
        gc.enable()


def test_prefix_declarations_count_towards_the_name_table():
    p = _parser()
    for i in range(5_000):
        (ev,) = p.feed(b"<message xmlns:p%d='urn:x'><p%d:x/></message>" % (i, i))
        assert ev.self_contained
    assert p.stats().names <= MAX_DISTINCT_NAMES + 8 and p.stats().name_rebuilds > 0


def test_long_fresh_namespace_uris_are_bounded_by_bytes():
    p = _parser()
    for i in range(300):
        p.feed(b"<message><x xmlns='urn:%d:%s'/></message>" % (i, b"u" * 2000))
        assert p.stats().name_bytes <= MAX_NAME_BYTES + 2100
    assert p.stats().name_rebuilds >= 300 * 2000 // MAX_NAME_BYTES - 2


@pytest.mark.parametrize("mode", ["whole", "bytewise", "chunks7"])
def test_after_a_rebuild_header_prefixes_and_offsets_are_unchanged(monkeypatch, mode):
    monkeypatch.setattr(parser_module, "MAX_DISTINCT_NAMES", 20)
    data = b"".join(b"<db:result from='a' to='b' n%d='x'><k%d/></db:result> <message id='%d'/>" % (i, i, i)
                    for i in range(60))
    p, got = feed(S2S_HEADER + data, mode, max_stanza_bytes=65536)
    assert p.stats().name_rebuilds >= 5
    ref = StreamParser(max_stanza_bytes=65536)
    monkeypatch.setattr(parser_module, "MAX_DISTINCT_NAMES", 10**9)
    want = ref.feed(S2S_HEADER + data)
    assert ref.stats().name_rebuilds == 0
    key = lambda e: (e.end, getattr(e, "raw", None), getattr(e, "self_contained", None),
                     canon(e.element) if isinstance(e, Stanza) else None)
    assert [key(e) for e in got] == [key(e) for e in want]
    assert not [e for e in got if isinstance(e, Stanza) and e.element.tag.endswith("result")][-1].self_contained


def test_an_error_after_a_rebuild_still_gives_its_absolute_offset(monkeypatch):
    monkeypatch.setattr(parser_module, "MAX_DISTINCT_NAMES", 10)
    p = _parser()
    for stanza in _fresh_names(30):
        p.feed(stanza)
    assert p.stats().name_rebuilds > 0
    offset = p.bytes_fed + len(b"<iq><x>")
    with pytest.raises(StreamError) as info:
        p.feed(b"<iq><x></iq>")
    assert info.value.condition is C.NOT_WELL_FORMED
    assert f"at byte {offset + 2}" in info.value.text


# ------------------------------------------------------------ stalled stanzas

def test_incomplete_for_counts_from_when_a_stanza_was_first_seen_unfinished():
    p = _parser()
    assert p.incomplete_for(100.0) == 0.0  # nothing pending
    p.feed(b"<message to='a@b'><body>")
    assert p.incomplete_for(101.0) == 0.0  # first seen now
    for t in range(102, 110):
        p.feed(b"d")  # bytes keep coming, the stanza does not finish
        assert p.incomplete_for(float(t)) == t - 101.0
    p.feed(b"</body></message>")
    assert p.incomplete_for(111.0) == 0.0
    p.feed(b"   ")  # whitespace keepalives are not an unfinished stanza
    assert p.incomplete_for(112.0) == 0.0
    p.feed(b"<pres")  # a new stanza: a new clock
    assert p.incomplete_for(113.0) == 0.0
    assert p.incomplete_for(120.0) == 7.0
    # while the caller does not read (backpressure), the peer's clock does not run
    assert p.incomplete_for(150.0, paused=True) == 0.0
    assert p.incomplete_for(152.0) == 2.0


def test_unfinished_header_counts_as_incomplete():
    p = StreamParser(max_stanza_bytes=65536)
    assert p.incomplete_for(1.0) == 0.0
    p.feed(HEADER[:30])
    p.incomplete_for(2.0)
    assert p.incomplete_for(5.0) == 3.0

"""Shared helpers for the XML stream tests: feeding modes and canonical trees."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from xmppd.errors import StreamError, StreamErrorCondition
from xmppd.xml.parser import Event, StreamParser

NS_STREAM = "http://etherx.jabber.org/streams"
HEADER = (
    b"<?xml version='1.0'?>"
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    b" to='example.com' version='1.0' xml:lang='en'>"
)
S2S_HEADER = (
    b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'"
    b" xmlns:db='jabber:server:dialback' to='example.com' from='other.example' version='1.0'>"
)

MODES = ("whole", "bytewise", "chunks7")


def pieces(data: bytes, mode: str) -> list[bytes]:
    if mode == "whole":
        return [data]
    size = 1 if mode == "bytewise" else 7
    return [data[i : i + size] for i in range(0, len(data), size)]


def feed(data: bytes, mode: str = "whole", parser: StreamParser | None = None, **kw) -> tuple[StreamParser, list[Event]]:
    p = parser or StreamParser(max_stanza_bytes=kw.pop("max_stanza_bytes", 65536), **kw)
    events: list[Event] = []
    for piece in pieces(data, mode):
        events += p.feed(piece)
    return p, events


def feed_error(data: bytes, mode: str = "whole", **kw) -> StreamError:
    """Feed ``data`` and return the StreamError it must cause (deferred errors included)."""
    p = StreamParser(max_stanza_bytes=kw.pop("max_stanza_bytes", 65536), **kw)
    try:
        for piece in pieces(data, mode):
            p.feed(piece)
        p.feed(b"")
    except StreamError as exc:
        # a failed parser keeps failing
        try:
            p.feed(b"<x/>")
        except StreamError as again:
            assert again is exc
        else:  # pragma: no cover
            raise AssertionError("parser accepted data after an error")
        return exc
    raise AssertionError(f"no StreamError for {data[:80]!r}...")


def assert_condition(data: bytes, condition: StreamErrorCondition, mode: str = "whole", **kw) -> StreamError:
    exc = feed_error(data, mode, **kw)
    assert exc.condition is condition, f"{exc.condition} ({exc.text}) != {condition}"
    assert exc.text, "stream errors carry a human-readable text"
    return exc


def canon(elem: ET.Element) -> tuple:
    """Everything XML says about an element (namespace-aware), for equality checks."""
    return (elem.tag, dict(elem.attrib), elem.text or "", elem.tail or "", [canon(c) for c in elem])

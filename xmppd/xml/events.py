"""What the stream parser emits: stream events (frozen, slotted) and its work counters."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

__all__ = ["NS_STREAM", "NS_XML", "StreamOpen", "Stanza", "StreamClose", "Event", "ParserStats"]

NS_STREAM = "http://etherx.jabber.org/streams"
NS_XML = "http://www.w3.org/XML/1998/namespace"


@dataclass(frozen=True, slots=True)
class StreamOpen:
    """The ``<stream:stream ...>`` header."""

    tag: str
    attrs: dict[str, str]
    default_ns: str | None
    end: int


@dataclass(frozen=True, slots=True)
class Stanza:
    """One complete top-level child of the stream."""

    element: ET.Element
    raw: bytes
    start_tag_len: int
    self_contained: bool
    end: int


@dataclass(frozen=True, slots=True)
class StreamClose:
    """``</stream:stream>``; anything after it is ignored."""

    end: int


Event = StreamOpen | Stanza | StreamClose


@dataclass(frozen=True, slots=True)
class ParserStats:
    """Work and memory counters of one :class:`StreamParser` (tests, benchmarks)."""

    #: ``Parse`` calls made on expat
    parse_calls: int
    #: bytes expat had to look at: each call's new bytes plus the incomplete
    #: token it held from before (and scans again)
    bytes_scanned: int
    #: expat parsers replaced because the name tables reached their bound
    name_rebuilds: int
    #: expat parsers dropped by :meth:`StreamParser.release_idle`
    idle_releases: int
    #: distinct names in the current expat's tables, and their characters
    names: int
    name_bytes: int
    #: bytes held: the unfinished tail of the stream, and the part of it not yet given to expat
    buffered: int
    held_back: int


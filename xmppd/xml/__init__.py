"""Sans-IO XML stream layer: parser (bytes -> events) and writer (elements -> bytes).

See :mod:`xmppd.xml.parser` and :mod:`xmppd.xml.writer` for the rules each follows.
"""

from xmppd.xml.parser import (
    DEFAULT_MAX_DEPTH,
    MAX_DISTINCT_NAMES,
    MAX_HEADER_BYTES,
    MAX_NAME_BYTES,
    MAX_WHITESPACE_RUN,
    NS_STREAM,
    NS_XML,
    Event,
    ParserStats,
    Stanza,
    StreamClose,
    StreamOpen,
    StreamParser,
)
from xmppd.xml.writer import STREAM_CLOSE, rewrite_start_tag, serialize, stream_error, stream_header

__all__ = [
    "NS_STREAM",
    "NS_XML",
    "DEFAULT_MAX_DEPTH",
    "MAX_HEADER_BYTES",
    "MAX_WHITESPACE_RUN",
    "MAX_DISTINCT_NAMES",
    "MAX_NAME_BYTES",
    "StreamOpen",
    "Stanza",
    "StreamClose",
    "Event",
    "ParserStats",
    "StreamParser",
    "serialize",
    "stream_header",
    "STREAM_CLOSE",
    "stream_error",
    "rewrite_start_tag",
]

"""Entity capabilities, server side (XEP-0115): what each bound session supports.

Spec references:
  XEP-0115 §4    a client advertises ``<c node= ver= hash=/>`` in its presence
  XEP-0115 §6.2  the receiver asks ``disco#info`` for ``node#ver`` once and
                 caches the answer by ``ver``
  XEP-0115 §5.1  the verification string: identities, features and extended
                 forms in a defined order, hashed, base64
  XEP-0115 §5.4  a processing entity must not cache an answer whose hash does
                 not verify (or that has duplicate identities/features)
  XEP-0163 §4.2  PEP filters notifications with the ``<namespace>+notify``
                 features learned here

The broadcast presence of a bound session (``presence_out`` with no ``to``)
is inspected, never consumed.  When its ``<c/>`` names a ``ver`` not seen
before, the server (``from`` = the domain) sends one disco#info query to that
session through ``Router.request``; sessions advertising the same hashed
``ver`` at once share one query (and re-ask their own session if that
answer does not verify).
Answers whose hash verifies go into a bounded LRU cache keyed by
(hash, ver); an answer that does not verify (or a legacy ``<c/>`` without
``hash``) is used for that session only.  Every change of a session's known
features runs the ``caps_changed(session, features, previous)`` hook.

Other modules use ``server.caps.features_of(session)`` (a frozenset, empty when
unknown) and ``server.caps.wants(session, feature)``.

Named limits: ``cache_size`` verified ``ver`` strings kept, ``max_features``
features accepted per answer (more: the answer is ignored), ``query_timeout_s``
per query, :data:`MAX_INFLIGHT` distinct queries at once.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import weakref
from collections import OrderedDict
from typing import Any
from xml.etree.ElementTree import Element, SubElement

from ..config import ConfigError
from ..hooks import PRIO_EARLY
from ..xml.parser import Stanza
from .base import Module

__all__ = ["Caps", "NS_CAPS", "verification_string", "MAX_INFLIGHT"]

log = logging.getLogger("xmppd.modules.caps")

NS_CAPS = "http://jabber.org/protocol/caps"
NS_INFO = "http://jabber.org/protocol/disco#info"
NS_XDATA = "jabber:x:data"
_NS_XML = "{http://www.w3.org/XML/1998/namespace}"

#: distinct caps queries in flight at once (more: that session's caps stay unknown)
MAX_INFLIGHT = 1000
#: characters of a ``node``/``ver`` attribute accepted
MAX_CAPS_ATTR = 1024

#: XEP-0115 hash names (IANA "Hash Function Textual Names") -> hashlib
_HASHES = {"sha-1": "sha1", "sha-224": "sha224", "sha-256": "sha256", "sha-384": "sha384",
           "sha-512": "sha512", "md5": "md5"}


def verification_string(identities: list[tuple[str, str, str, str]], features: list[str],
                         forms: list[tuple[str, list[tuple[str, list[str]]]]]) -> str:
    """The XEP-0115 §5.1 string S before hashing.

    ``identities``: (category, type, lang, name); ``features``: vars;
    ``forms``: (FORM_TYPE, [(var, values)]) without the FORM_TYPE field."""
    out = []
    for ident in sorted("/".join(i) for i in identities):
        out.append(ident + "<")
    for var in sorted(features):
        out.append(var + "<")
    for form_type, fields in sorted(forms, key=lambda f: f[0]):
        out.append(form_type + "<")
        for var, values in sorted(fields, key=lambda f: f[0]):
            out.append(var + "<")
            for v in sorted(values):
                out.append(v + "<")
    return "".join(out)


def _parse_info(query: Element) -> tuple[list, list[str], list, bool]:
    """(identities, features, forms, well_formed) of a disco#info answer;
    ``well_formed`` is False for §5.4 problems (duplicates, several forms of
    one FORM_TYPE, FORM_TYPE not a single value)."""
    identities, features, forms = [], [], []
    ok = True
    for child in query:
        if child.tag == f"{{{NS_INFO}}}identity":
            identities.append((child.get("category", ""), child.get("type", ""),
                               child.get(f"{_NS_XML}lang", ""), child.get("name", "")))
        elif child.tag == f"{{{NS_INFO}}}feature":
            var = child.get("var")
            if var is not None:
                features.append(var)
        elif child.tag == f"{{{NS_XDATA}}}x":
            form_type = None
            fields = []
            for f in child.findall(f"{{{NS_XDATA}}}field"):
                var = f.get("var")
                values = [v.text or "" for v in f.findall(f"{{{NS_XDATA}}}value")]
                if var == "FORM_TYPE":
                    if f.get("type") != "hidden":
                        form_type = None
                        break  # §5.4: a form whose FORM_TYPE is not hidden is ignored
                    if len(values) != 1:
                        ok = False
                    form_type = values[0] if values else ""
                elif var is not None:
                    fields.append((var, values))
            if form_type is not None:
                forms.append((form_type, fields))
    if len(set(identities)) != len(identities) or len(set(features)) != len(features):
        ok = False
    if len({ft for ft, _ in forms}) != len(forms):
        ok = False
    return identities, features, forms, ok


def compute_ver(query: Element, hash_name: str) -> str | None:
    """The base64 verification string of a disco#info ``<query/>`` for
    ``hash_name`` (XEP-0115 §5.1); None when the hash is unknown or the answer
    breaks §5.4."""
    algo = _HASHES.get(hash_name)
    if algo is None:
        return None
    identities, features, forms, ok = _parse_info(query)
    if not ok:
        return None
    s = verification_string(identities, features, forms)
    return base64.b64encode(hashlib.new(algo, s.encode("utf-8")).digest()).decode("ascii")


class Caps(Module):
    name = "caps"
    xeps = (("0115", "1.6 (server side: learning client capabilities)"),)
    options_spec = {
        "cache_size": (int, 10_000),
        "max_features": (int, 1000),
        "query_timeout_s": (float, 10.0),
    }

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        for key in ("cache_size", "max_features"):
            if options[key] < 1:
                raise ConfigError(f"modules.caps.{key}", "must be at least 1")
        if not 0 < options["query_timeout_s"] <= 300:
            raise ConfigError("modules.caps.query_timeout_s", "must be in (0, 300]")

    def __init__(self, server, options=None) -> None:
        super().__init__(server, options)
        #: (hash, ver) -> verified features, least recently used first
        self._cache: "OrderedDict[tuple[str, str], frozenset[str]]" = OrderedDict()
        self._inflight: dict[tuple[str, str, str], Any] = {}
        self._features: "weakref.WeakKeyDictionary[Any, frozenset[str]]" = weakref.WeakKeyDictionary()
        #: the (node, ver, hash) a session last advertised: answers for an older one are dropped
        self._current: "weakref.WeakKeyDictionary[Any, tuple[str, str, str]]" = weakref.WeakKeyDictionary()

    def setup(self) -> None:
        h = self.server.hooks
        h.on("presence_out", self.presence_out, PRIO_EARLY)
        h.on("session_closed", self._closed)
        self.server.caps = self

    # ------------------------------------------------------------ API
    def features_of(self, session) -> frozenset[str]:
        return self._features.get(session, frozenset())

    def wants(self, session, feature: str) -> bool:
        return feature in self._features.get(session, ())

    def cached(self, hash_name: str, ver: str) -> frozenset[str] | None:
        return self._cache.get((hash_name, ver))

    # ------------------------------------------------------------ presence
    def presence_out(self, session, stanza: Stanza, to, typ) -> bool:
        if to is not None or typ is not None:
            return False
        c = stanza.element.find(f"{{{NS_CAPS}}}c")
        if c is None:
            self._current.pop(session, None)
            if session in self._features:
                self._set(session, frozenset())
            return False
        node, ver, hash_name = c.get("node", ""), c.get("ver", ""), c.get("hash", "")
        if not node or not ver or len(node) > MAX_CAPS_ATTR or len(ver) > MAX_CAPS_ATTR:
            return False
        key = (node, ver, hash_name)
        if self._current.get(session) == key and session in self._features:
            return False  # unchanged (e.g. a status change)
        self._current[session] = key
        known = self._cache.get((hash_name, ver)) if hash_name else None
        if known is not None:
            self._cache.move_to_end((hash_name, ver))
            # after the router recorded the presence (session.available) and this hook chain ends
            self.server.spawn(self._apply(session, key, known))
        else:
            self.server.spawn(self._learn(session, key))
        return False

    async def _apply(self, session, key, features: frozenset[str]) -> None:
        if self._current.get(session) == key:
            self._set(session, features)

    def _set(self, session, features: frozenset[str]) -> None:
        previous = self._features.get(session, frozenset())
        self._features[session] = features
        if features != previous:
            for hook in self.server.hooks.handlers("caps_changed"):
                try:
                    hook(session, features, previous)
                except Exception:  # noqa: BLE001 - one module's bug must not hide caps from others
                    log.exception("caps_changed handler failed")

    def _closed(self, session) -> None:
        self._features.pop(session, None)
        self._current.pop(session, None)

    async def _learn(self, session, key: tuple[str, str, str]) -> None:
        node, ver, hash_name = key
        # sessions advertising the same hashed ver share one query; a legacy
        # (hash-less) ver is only ever asked of its own session
        qkey = (hash_name, node, ver) if hash_name else ("", str(session.jid), f"{node}#{ver}")
        fut = self._inflight.get(qkey)
        own = fut is None
        if own:
            if len(self._inflight) >= MAX_INFLIGHT:
                log.warning("caps: too many queries in flight, %s stays unknown", session.jid)
                return
            fut = self.server.spawn(self._query(session, key))
            self._inflight[qkey] = fut
            fut.add_done_callback(lambda _f: self._inflight.pop(qkey, None))
        features = await fut
        if not own:
            # another session answered: usable only if its answer verified
            features = self._cache.get((hash_name, ver))
            if features is None:
                features = await self._query(session, key)
        if features is not None and self._current.get(session) == key:
            self._set(session, features)

    async def _query(self, session, key: tuple[str, str, str]) -> frozenset[str] | None:
        node, ver, hash_name = key
        iq = Element("{jabber:client}iq", {"type": "get"})
        SubElement(iq, f"{{{NS_INFO}}}query", {"node": f"{node}#{ver}"})
        try:
            answer = await self.server.router.request(session, iq, from_=session.jid.domain,
                                                      timeout=self.options["query_timeout_s"])
        except Exception as exc:  # noqa: BLE001 - timeout, session gone, table full
            log.debug("caps query to %s failed: %s", session.jid, exc)
            return None
        query = answer.find(f"{{{NS_INFO}}}query")
        if answer.get("type") != "result" or query is None:
            return None
        features = [f.get("var") for f in query.findall(f"{{{NS_INFO}}}feature") if f.get("var")]
        if len(features) > self.options["max_features"]:
            log.info("caps answer of %s has %d features (> max_features), ignored",
                     session.jid, len(features))
            return None
        result = frozenset(features)
        if hash_name:
            if compute_ver(query, hash_name) == ver:
                self._cache[(hash_name, ver)] = result
                self._cache.move_to_end((hash_name, ver))
                while len(self._cache) > self.options["cache_size"]:
                    self._cache.popitem(last=False)
            else:
                log.info("caps hash of %s does not verify; features used for that session only",
                         session.jid)
        return result

"""xmppd: an XMPP server built around TLS client-certificate login."""

__version__ = "0.1.0"

"""Shared pytest configuration."""

import logging

logging.getLogger("slixmpp").setLevel(logging.WARNING)

"""MongooseIM's documented configuration keys, as data.

Read from MongooseIM's configuration documentation (esl.github.io/MongooseDocs,
versions 4.x-6.x: ``configuration/general``, ``listen`` and ``listeners/*``,
``auth`` and ``authentication-methods/*``, ``internal-databases``,
``outgoing-connections``, ``Services``, ``Modules`` and ``modules/mod_*``,
``shaper``, ``acl``, ``access``, ``s2s``, ``host_config``, ``instrumentation``).
Keys renamed between MongooseIM versions are listed under both names.

:mod:`xmppd.config.mongooseim` uses these tables to tell a MongooseIM key
xmppd does not implement (one warning, ignored) from a key that is in no
MongooseIM schema either (a typo: an error).  Nothing here says what xmppd
does with a key; that is in the schema and in the translation module.
"""

from __future__ import annotations

__all__ = [
    "TOP_LEVEL", "GENERAL", "LISTENER_TYPES", "LISTEN_COMMON", "LISTEN_XMPP", "LISTEN_C2S", "LISTEN_S2S",
    "LISTEN_SERVICE", "LISTEN_HTTP", "HTTP_HANDLERS", "TLS", "AUTH", "AUTH_METHODS", "AUTH_PASSWORD",
    "AUTH_METHOD_OPTIONS", "SASL_MECHANISMS", "PASSWORD_HASHES", "INTERNAL_DATABASES", "OUTGOING_POOL_TYPES",
    "OUTGOING_POOL", "OUTGOING_CONNECTION", "SERVICES", "MODULES", "MODULE_OPTIONS", "S2S", "HOST_CONFIG",
    "INSTRUMENTATION", "LOGLEVELS",
]

#: top-level sections of mongooseim.toml
TOP_LEVEL = frozenset({
    "general", "listen", "auth", "internal_databases", "outgoing_pools", "services", "modules",
    "shaper", "acl", "access", "s2s", "host_config", "instrumentation",
})

#: general.loglevel values
LOGLEVELS = ("none", "emergency", "alert", "critical", "error", "warning", "notice", "info", "debug", "all")

GENERAL = frozenset({
    "loglevel", "hosts", "host_types", "default_server_domain", "language", "rdbms_server_type",
    "registration_timeout", "hide_service_name", "sm_backend", "replaced_wait_timeout", "s2s_backend",
    "component_backend", "route_subdomains", "routing_modules", "http_server_name", "max_fsm_queue",
    "domain_certfile", "all_metrics_are_global", "mongooseimctl_access_commands", "override",
    "max_users_per_domain", "cluster_name",
})

#: [[listen.<type>]]
LISTENER_TYPES = frozenset({"c2s", "s2s", "service", "component", "http"})
LISTEN_COMMON = frozenset({"port", "ip_address", "proto", "ip_version"})
LISTEN_XMPP = LISTEN_COMMON | frozenset({
    "backlog", "proxy_protocol", "hibernate_after", "max_stanza_size", "num_acceptors", "state_timeout",
    "max_connections", "reuse_port", "tls",
})
LISTEN_C2S = LISTEN_XMPP | frozenset({
    "access", "shaper", "c2s_state_timeout", "backwards_compatible_session", "allowed_auth_methods",
    "max_fsm_queue", "zlib",
})
LISTEN_S2S = LISTEN_XMPP | frozenset({"shaper", "max_fsm_queue", "dhfile"})
LISTEN_SERVICE = LISTEN_XMPP | frozenset({
    "access", "password", "shaper_rule", "shaper", "check_from", "hidden_components", "conflict_behaviour",
    "max_fsm_queue",
})
LISTEN_HTTP = LISTEN_COMMON | frozenset({"handlers", "transport", "protocol", "tls"})
#: [[listen.http.handlers.<type>]]
HTTP_HANDLERS = frozenset({
    "mod_bosh", "mod_websockets", "mongoose_graphql_handler", "mongoose_admin_api", "mongoose_client_api",
    "mongoose_api", "mongoose_api_admin", "mongoose_api_client", "mongoose_domain_handler",
    "mongoose_prometheus_handler", "mongoose_system_metrics", "lasse_handler", "cowboy_static",
})

#: listen.*.tls and outgoing_pools.*.*.connection.tls
TLS = frozenset({
    "mode", "module", "verify_mode", "verify_peer", "certfile", "cacertfile", "dhfile", "ciphers",
    "protocol_options", "keyfile", "password", "disconnect_on_failure", "versions", "crl_files",
    "server_name_indication", "server_name_indication_host", "server_name_indication_protocol", "required",
})

AUTH = frozenset({
    "methods", "sasl_mechanisms", "sasl_external", "password", "scram_iterations", "max_users_per_domain",
    "internal", "rdbms", "external", "anonymous", "ldap", "jwt", "riak", "http", "pki", "dummy",
})
AUTH_METHODS = ("internal", "rdbms", "external", "anonymous", "ldap", "jwt", "riak", "http", "pki", "dummy")
AUTH_PASSWORD = frozenset({"format", "hash", "scram_iterations"})
#: [auth.<method>] keys
AUTH_METHOD_OPTIONS = {
    "internal": frozenset(),
    "rdbms": frozenset({"users_number_estimate"}),
    "external": frozenset({"program", "instances"}),
    "anonymous": frozenset({"allow_multiple_connections", "protocol", "backend"}),
    "ldap": frozenset({
        "pool_tag", "bind_pool_tag", "base", "uids", "filter", "dn_filter", "local_filter", "deref",
    }),
    "jwt": frozenset({"secret", "algorithm", "username_key"}),
    "riak": frozenset({"bucket_type"}),
    "http": frozenset({"basic_auth"}),
    "pki": frozenset(),
    "dummy": frozenset({"base_time", "variance"}),
}
SASL_MECHANISMS = (
    "scram_sha512_plus", "scram_sha512", "scram_sha384_plus", "scram_sha384", "scram_sha256_plus",
    "scram_sha256", "scram_sha224_plus", "scram_sha224", "scram_sha1_plus", "scram_sha1", "plain",
    "anonymous", "oauth", "external", "digest", "x-oauth",
)
#: auth.password.hash values ("sha" is SHA-1)
PASSWORD_HASHES = ("sha", "sha224", "sha256", "sha384", "sha512")

INTERNAL_DATABASES = {
    "mnesia": frozenset(),
    "cets": frozenset({"backend", "cluster_name", "node_list_file"}),
}

#: [outgoing_pools.<type>.<tag>]
OUTGOING_POOL_TYPES = frozenset({"cassandra", "riak", "redis", "http", "elastic", "rdbms", "rabbit", "ldap"})
OUTGOING_POOL = frozenset({"scope", "host", "host_type", "strategy", "workers", "call_timeout", "connection"})
#: [outgoing_pools.<type>.<tag>.connection], by pool type
OUTGOING_CONNECTION = {
    "rdbms": frozenset({
        "driver", "settings", "host", "port", "database", "username", "password", "keepalive_interval",
        "query_timeout", "max_start_interval", "tls",
    }),
    "http": frozenset({"host", "path_prefix", "request_timeout", "tls"}),
    "redis": frozenset({"host", "port", "database", "password"}),
    "riak": frozenset({"address", "port", "credentials", "tls"}),
    "cassandra": frozenset({"servers", "keyspace", "auth", "tls"}),
    "elastic": frozenset({"host", "port"}),
    "rabbit": frozenset({
        "amqp_host", "amqp_port", "amqp_username", "amqp_password", "confirms_enabled", "max_worker_queue_len",
    }),
    "ldap": frozenset({
        "servers", "port", "rootdn", "password", "connect_interval", "encrypt", "tls",
    }),
}

SERVICES = frozenset({"service_admin_extra", "service_mongoose_system_metrics", "service_domain_db"})

#: [modules.<name>]: every MongooseIM module
MODULES = frozenset({
    "mod_adhoc", "mod_admin_extra", "mod_amp", "mod_auth_token", "mod_aws_sns", "mod_bind2", "mod_blocking",
    "mod_blocklist", "mod_bosh", "mod_broadcast", "mod_cache_users", "mod_caps", "mod_carboncopy",
    "mod_commands", "mod_csi", "mod_disco", "mod_domain_isolation", "mod_event_pusher", "mod_extdisco",
    "mod_external_filter", "mod_fast_auth_token", "mod_global_distrib", "mod_http_notification",
    "mod_http_upload", "mod_inbox", "mod_invites", "mod_jingle_sip", "mod_keystore", "mod_last", "mod_mam",
    "mod_mam_meta", "mod_muc", "mod_muc_commands", "mod_muc_light", "mod_muc_light_commands", "mod_muc_log",
    "mod_offline", "mod_offline_chatmarkers", "mod_offline_stub", "mod_ping", "mod_presence", "mod_privacy",
    "mod_private", "mod_pubsub", "mod_push_service_mongoosepush", "mod_register", "mod_revproxy",
    "mod_roster", "mod_sasl2", "mod_shared_roster_ldap", "mod_sic", "mod_smart_markers", "mod_stanzaid",
    "mod_stream_management", "mod_time", "mod_vcard", "mod_version", "mod_websockets",
})

#: options of the MongooseIM modules xmppd implements (xmppd.config.schema.MODULE_ALIASES)
_IQDISC = frozenset({"iqdisc"})
MODULE_OPTIONS = {
    "mod_disco": _IQDISC | frozenset({"extra_domains", "server_info", "users_can_see_hidden_services"}),
    "mod_ping": _IQDISC | frozenset({"send_pings", "ping_interval", "timeout_action", "ping_req_timeout"}),
    "mod_version": _IQDISC | frozenset({"os_info"}),
    "mod_roster": _IQDISC | frozenset({"versioning", "store_current_id", "backend", "riak"}),
    "mod_presence": frozenset(),
    "mod_blocking": frozenset({"backend"}),
    "mod_offline": frozenset({"access_max_user_messages", "backend", "store_groupchat_messages", "riak"}),
    "mod_carboncopy": _IQDISC,
    "mod_mam": _IQDISC | frozenset({
        "backend", "no_stanzaid_element", "is_archivable_message", "send_message", "archive_chat_markers",
        "message_retraction", "pm", "muc", "cache_users", "rdbms_message_format", "async_writer",
        "flush_interval", "max_batch_size", "user_prefs_store", "full_text_search", "riak",
        "default_result_limit", "max_result_limit", "db_jid_format", "db_message_format", "simple",
        "extra_fin_element", "extra_lookup_params", "enforce_simple_queries", "delete_domain_limit", "cache",
        "archive_groupchats", "host",
    }),
    "mod_vcard": _IQDISC | frozenset({"host", "search", "backend", "matches", "ldap", "riak"}),
    "mod_caps": frozenset({"cache_size", "cache_life_time", "backend"}),
    "mod_csi": frozenset({"buffer_max"}),
    "mod_stream_management": frozenset({
        "backend", "buffer", "buffer_max", "ack", "ack_freq", "resume_timeout", "stale_h", "cache",
    }),
}
MODULE_OPTIONS["mod_mam_meta"] = MODULE_OPTIONS["mod_mam"]

S2S = frozenset({
    "default_policy", "host_policy", "use_starttls", "certfile", "shared", "address", "ciphers", "dns",
    "outgoing", "max_retry_delay", "state_timeout", "max_stanza_size",
})

#: keys of one [[host_config]] entry
HOST_CONFIG = frozenset({"host", "host_type", "general", "auth", "modules", "s2s", "acl", "access", "shaper"})

INSTRUMENTATION = frozenset({"exometer", "prometheus", "log"})

//! The keywords keepalived knows, per block: what the importer leaves to keepalived, and
//! what an unknown keyword is compared with to suggest the one probably meant.

/// Root keywords that keepalived handles itself, with what to tell the operator.
pub(super) const KEEPALIVED_ONLY: &[(&str, &str)] = &[
    ("global_defs", "not converted (it stays in keepalived.conf)"),
    ("vrrp_script", "keep running keepalived for VRRP"),
    ("vrrp_sync_group", "keep running keepalived for VRRP"),
    (
        "static_ipaddress",
        "not converted (it stays in keepalived.conf)",
    ),
    (
        "static_routes",
        "not converted (it stays in keepalived.conf)",
    ),
    (
        "static_rules",
        "not converted (it stays in keepalived.conf)",
    ),
    ("linkbeat_interfaces", "keep running keepalived for VRRP"),
    ("vrrp_track_process", "keep running keepalived for VRRP"),
    ("track_file", "keep running keepalived for VRRP"),
    ("vrrp_track_file", "keep running keepalived for VRRP"),
    ("garp_group", "keep running keepalived for VRRP"),
    ("bfd_instance", "lb-agent has no BFD checker"),
    (
        "net_namespace",
        "not converted (lb-agent runs where it is started)",
    ),
    (
        "net_namespace_ipvs",
        "not converted (lb-agent does not use IPVS)",
    ),
    (
        "instance",
        "not converted (lb-agent's `instance` key is its own)",
    ),
    ("use_pid_dir", "not converted"),
    ("child_wait_time", "not converted"),
];

/// Keywords keepalived knows at the top level.
pub(super) const ROOT_KEYWORDS: &[&str] = &[
    "virtual_server",
    "virtual_server_group",
    "vrrp_instance",
    "include",
    "global_defs",
    "vrrp_script",
    "vrrp_sync_group",
    "static_ipaddress",
    "static_routes",
    "static_rules",
    "linkbeat_interfaces",
    "vrrp_track_process",
    "track_file",
    "vrrp_track_file",
    "garp_group",
    "bfd_instance",
    "SSL",
    "net_namespace",
    "net_namespace_ipvs",
    "instance",
    "use_pid_dir",
    "child_wait_time",
];

/// Keywords of a `virtual_server` (keepalived 2.x).
pub(super) const VS_KEYWORDS: &[&str] = &[
    "delay_loop",
    "lb_algo",
    "lvs_sched",
    "lb_kind",
    "lvs_method",
    "persistence_timeout",
    "persistence_granularity",
    "protocol",
    "alpha",
    "omega",
    "quorum",
    "hysteresis",
    "quorum_up",
    "quorum_down",
    "sorry_server",
    "inhibit_on_failure",
    "ha_suspend",
    "virtualhost",
    "warmup",
    "connect_timeout",
    "retry",
    "delay_before_retry",
    "real_server",
    "ip_family",
    "hashed",
    "ops",
    "flag-1",
    "flag-2",
    "flag-3",
    "sh-port",
    "sh-fallback",
    "mh-port",
    "mh-fallback",
    "persistence_engine",
    "smtp_alert",
    "snmp_name",
    "weight",
    "sorry_server_inhibit",
    "sorry_server_lvs_method",
    "nat_mask",
];

/// Keywords of a `real_server` (keepalived 2.x), checkers included.
pub(super) const RS_KEYWORDS: &[&str] = &[
    "weight",
    "inhibit_on_failure",
    "notify_up",
    "notify_down",
    "TCP_CHECK",
    "HTTP_GET",
    "SSL_GET",
    "MISC_CHECK",
    "SMTP_CHECK",
    "DNS_CHECK",
    "UDP_CHECK",
    "PING_CHECK",
    "FILE_CHECK",
    "BFD_CHECK",
    "lvs_method",
    "uthreshold",
    "lthreshold",
    "alpha",
    "retry",
    "delay_before_retry",
    "warmup",
    "connect_timeout",
    "delay_loop",
    "smtp_alert",
    "virtualhost",
    "snmp_name",
];

/// Keywords of every network checker.
pub(super) const CHECK_KEYWORDS: &[&str] = &[
    "connect_ip",
    "connect_port",
    "bindto",
    "bind_port",
    "connect_timeout",
    "retry",
    "delay_before_retry",
    "warmup",
    "bind_if",
    "fwmark",
    "delay_loop",
    "alpha",
    "log_all_failures",
];

/// Keywords HTTP_GET and SSL_GET add.
pub(super) const HTTP_KEYWORDS: &[&str] = &[
    "url",
    "nb_get_retry",
    "virtualhost",
    "http_protocol",
    "enable_sni",
    "sni_name",
    "tls_compliant",
    "fast_recovery",
];

/// Keywords of the global `SSL` block.
pub(super) const SSL_KEYWORDS: &[&str] = &["password", "ca", "certificate", "key"];

/// Keywords of a `url` block.
pub(super) const URL_KEYWORDS: &[&str] = &[
    "path",
    "status_code",
    "digest",
    "virtualhost",
    "regex",
    "regex_no_match",
    "regex_options",
    "regex_min_offset",
    "regex_max_offset",
    "regex_stack",
];

/// Keywords UDP_CHECK adds.
pub(super) const UDP_KEYWORDS: &[&str] = &[
    "payload",
    "require_reply",
    "min_reply_length",
    "max_reply_length",
];

/// Keywords DNS_CHECK adds.
pub(super) const DNS_KEYWORDS: &[&str] = &["type", "name"];

/// Keywords SMTP_CHECK adds.
pub(super) const SMTP_KEYWORDS: &[&str] = &["helo_name", "host"];

/// Keywords of a MISC_CHECK.
pub(super) const MISC_KEYWORDS: &[&str] = &[
    "misc_path",
    "misc_timeout",
    "warmup",
    "misc_dynamic",
    "user",
    "retry",
    "delay_before_retry",
    "delay_loop",
    "alpha",
    "log_all_failures",
];

/// Keywords of a FILE_CHECK.
pub(super) const FILE_CHECK_KEYWORDS: &[&str] = &["track_file", "weight"];

/// Keywords of a `track_file` block.
pub(super) const TRACK_FILE_KEYWORDS: &[&str] = &["file", "weight", "init_file"];

/// The options of `lvs_sync_daemon` after its interface (keepalived 2.x).
pub(super) const SYNC_DAEMON_OPTIONS: &[&str] = &["inst", "id", "maxlen", "port", "ttl", "group"];

/// IPVS schedulers keepalived accepts (names are lower case).
pub(super) const KEEPALIVED_SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "sh", "mh", "dh", "fo", "ovf", "lblcr", "sed", "nq", "twos",
];

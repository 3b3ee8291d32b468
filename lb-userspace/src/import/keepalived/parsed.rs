//! What the file describes, as keepalived would run it: the services, their real servers and
//! checkers, each value with the keepalived line it was set on; and keepalived's defaults.

use std::net::{IpAddr, Ipv4Addr};

/// keepalived's checker defaults that lb-agent shares.
pub(super) const DEFAULT_CONNECT_TIMEOUT: &str = "5";
/// keepalived's `delay_before_retry` for HTTP_GET and SSL_GET (1 s for the other checkers).
pub(super) const HTTP_DEFAULT_DELAY_BEFORE_RETRY: f64 = 3.0;
/// keepalived's `persistence_timeout` when given without a value or implied by a granularity.
pub(super) const DEFAULT_PERSISTENCE_TIMEOUT: u64 = 360;
/// IPVS's sync multicast group, which keepalived's `lvs_sync_daemon` uses without `group`.
pub(super) const IPVS_SYNC_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
/// IPVS's sync multicast TTL, which keepalived's `lvs_sync_daemon` uses without `ttl`.
pub(super) const IPVS_SYNC_TTL: u8 = 1;
/// IPVS's sync port (its datagrams are not lb-agent's).
pub(super) const IPVS_SYNC_PORT: u16 = 8848;
/// The `sync.key_file` the YAML names: the operator creates it on every director.
pub(super) const SYNC_KEY_FILE: &str = "/etc/lb-xdp/sync.key";

/// A value and the line it was set on.
pub(super) type At<T> = Option<(T, usize)>;

/// What the file describes: the services, and what keepalived keeps doing.
#[derive(Default)]
pub(super) struct File {
    pub(super) services: Vec<Service>,
    pub(super) vrrp: Vec<Vrrp>,
    /// The IPVS sync daemon keepalived runs, which becomes `sync:`.
    pub(super) sync: Option<SyncDaemon>,
}

/// The client certificate of keepalived's global `SSL` block, which every SSL_GET presents.
#[derive(Clone)]
pub(super) struct ClientCert {
    /// `certificate`: an absolute path.
    pub(super) certificate: (String, usize),
    /// `key`: an absolute path.
    pub(super) key: (String, usize),
}

/// A `vrrp_instance`.
pub(super) struct Vrrp {
    pub(super) name: String,
    pub(super) interface: At<String>,
    pub(super) vips: Vec<String>,
    /// keepalived's default sync id for an `lvs_sync_daemon` that follows this instance.
    pub(super) virtual_router_id: At<u8>,
}

/// keepalived's `lvs_sync_daemon` (in `global_defs`) or the old `lvs_sync_daemon_interface` of
/// a `vrrp_instance`: IPVS's connection sync, as keepalived would run it.
pub(super) struct SyncDaemon {
    pub(super) line: usize,
    /// The keyword as written (`lvs_sync_daemon` or `lvs_sync_daemon_interface`).
    pub(super) keyword: String,
    /// The statement as written, for the YAML's comment.
    pub(super) raw: String,
    pub(super) interface: String,
    /// The VRRP instance whose virtual_router_id is the default sync id.
    pub(super) instance: Option<String>,
    /// The sync id: as given, or once the file is read, the instance's virtual_router_id.
    pub(super) id: At<u8>,
    /// Where an id that was not given comes from, for the YAML's comment.
    pub(super) id_note: Option<String>,
    pub(super) group: At<IpAddr>,
    pub(super) ttl: At<u8>,
}

/// A `virtual_server`.
pub(super) struct Service {
    pub(super) line: usize,
    /// `virtual_server group NAME`: the group's name and its entries as `vips` writes them
    /// (`vip` and `port` are then the first entry's).
    pub(super) group: Option<(String, Vec<String>)>,
    pub(super) vip: IpAddr,
    pub(super) port: Option<u16>,
    pub(super) protocol: At<String>,
    pub(super) lb_algo: At<String>,
    /// IPVS scheduling flags (`sh-port`, `sh-fallback`, `mh-port`, `mh-fallback`, `ops`), each
    /// with its line.
    pub(super) lb_flags: Vec<(String, usize)>,
    pub(super) lb_kind: At<String>,
    pub(super) persistence_timeout: At<u64>,
    pub(super) persistence_granularity: At<String>,
    pub(super) delay_loop: At<f64>,
    pub(super) warmup: At<f64>,
    pub(super) alpha: At<bool>,
    pub(super) omega: At<bool>,
    pub(super) inhibit_on_failure: At<bool>,
    pub(super) quorum: At<u64>,
    pub(super) hysteresis: At<u64>,
    pub(super) quorum_up: At<String>,
    pub(super) quorum_down: At<String>,
    pub(super) sorry_server: Option<(IpAddr, Option<u16>, usize)>,
    /// The `Host` of the HTTP checks of its reals that set none.
    pub(super) virtualhost: At<String>,
    pub(super) timing: Timing,
    pub(super) reals: Vec<Real>,
    /// Unknown keywords that probably meant one of ours: (meant, line, as written).
    pub(super) misspelled: Vec<(&'static str, usize, String)>,
}

/// Checker timing, set on a checker or inherited from its real or virtual server.
#[derive(Clone, Default)]
pub(super) struct Timing {
    pub(super) connect_timeout: At<f64>,
    pub(super) retry: At<u64>,
    pub(super) delay_before_retry: At<f64>,
    pub(super) warmup: At<f64>,
}

/// A `real_server`.
pub(super) struct Real {
    pub(super) line: usize,
    pub(super) ip: IpAddr,
    pub(super) port: Option<u16>,
    pub(super) weight: At<u64>,
    pub(super) uthreshold: At<u64>,
    pub(super) lthreshold: At<u64>,
    pub(super) inhibit_on_failure: At<bool>,
    pub(super) notify_up: At<String>,
    pub(super) notify_down: At<String>,
    pub(super) method: At<String>,
    /// The `Host` of its HTTP check, unless the check sets one.
    pub(super) virtualhost: At<String>,
    pub(super) timing: Timing,
    /// keepalived's per-real `delay_loop` (lb-agent has one per service).
    pub(super) delay_loop: At<f64>,
    pub(super) checks: Vec<Check>,
}

/// The checker kinds lb-agent has.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum CheckKind {
    Tcp,
    Http,
    Misc,
    Udp,
    Dns,
    Ping,
    Smtp,
    File,
}

/// A `track_file` block (or its old name `vrrp_track_file`), for the FILE_CHECKs that name it.
#[derive(Clone)]
pub(super) struct TrackFile {
    pub(super) line: usize,
    pub(super) path: At<String>,
    pub(super) weight: At<(i64, bool)>,
    pub(super) init_file: At<(i64, bool)>,
}

/// A FILE_CHECK as keepalived runs it: its track_file's file, and the weight (the check's own,
/// else the track_file's, else 1).
pub(super) struct FileSpec {
    pub(super) path: (String, usize),
    pub(super) weight: (i64, bool, usize),
    pub(super) init_file: At<(i64, bool)>,
}

/// A `TCP_CHECK`, `HTTP_GET` or `SSL_GET`, `MISC_CHECK`, `UDP_CHECK`, `DNS_CHECK`,
/// `PING_CHECK` or `SMTP_CHECK`.
pub(super) struct Check {
    pub(super) kind: CheckKind,
    pub(super) line: usize,
    /// The keepalived keyword (`SSL_GET` is of kind `Http`).
    pub(super) keyword: &'static str,
    pub(super) connect_ip: At<IpAddr>,
    pub(super) connect_port: At<u16>,
    pub(super) bindto: At<IpAddr>,
    pub(super) bind_port: At<u16>,
    pub(super) timing: Timing,
    /// The `Host` of its urls that set none (HTTP_GET and SSL_GET).
    pub(super) virtualhost: At<String>,
    pub(super) urls: Vec<Url>,
    pub(super) misc_path: At<String>,
    pub(super) misc_timeout: At<u64>,
    pub(super) misc_dynamic: At<bool>,
    pub(super) file: Option<FileSpec>,
    /// keepalived's per-checker `delay_loop` (lb-agent has one per service).
    pub(super) delay_loop: At<f64>,
    /// UDP_CHECK's `payload`, lowercase hexadecimal.
    pub(super) payload: At<String>,
    /// UDP_CHECK's `require_reply`, with its pattern (lowercase hexadecimal) if it has one.
    pub(super) require_reply: At<Option<String>>,
    /// DNS_CHECK's `type`, upper case.
    pub(super) dns_type: At<&'static str>,
    /// DNS_CHECK's `name`.
    pub(super) dns_name: At<String>,
    /// SMTP_CHECK's `helo_name`.
    pub(super) helo_name: At<String>,
    /// SSL_GET's `enable_sni` (set by a `sni_name` too).
    pub(super) enable_sni: At<bool>,
    /// SSL_GET's `sni_name`.
    pub(super) sni_name: At<String>,
    /// SSL_GET's client certificate: the global `SSL` block's.
    pub(super) client_cert: Option<ClientCert>,
    /// Value and line of an `nb_get_retry` in a TCP_CHECK, which keepalived does not know (so
    /// it is not applied).
    pub(super) tcp_nb_get_retry: Option<(u64, usize)>,
}

impl Check {
    /// A `keyword` block of `kind` at `line`, with nothing set yet.
    pub(super) fn new(kind: CheckKind, line: usize, keyword: &'static str) -> Self {
        Self {
            kind,
            line,
            keyword,
            connect_ip: None,
            connect_port: None,
            bindto: None,
            bind_port: None,
            timing: Timing::default(),
            virtualhost: None,
            urls: Vec::new(),
            misc_path: None,
            misc_timeout: None,
            misc_dynamic: None,
            file: None,
            delay_loop: None,
            payload: None,
            require_reply: None,
            dns_type: None,
            dns_name: None,
            helo_name: None,
            enable_sni: None,
            sni_name: None,
            client_cert: None,
            tcp_nb_get_retry: None,
        }
    }
}

/// One `url` of an HTTP_GET.
pub(super) struct Url {
    pub(super) line: usize,
    pub(super) path: At<String>,
    /// Codes and ranges (`(code, code)` for a code) of every `status_code` line; none:
    /// keepalived's any 2xx, lb-agent's default too. The line is the first's.
    pub(super) status_code: At<Vec<(u16, u16)>>,
    /// MD5 of the body, lowercase hexadecimal.
    pub(super) digest: At<String>,
    pub(super) virtualhost: At<String>,
}

/// Seconds as keepalived wrote them: whole numbers without a fraction.
pub(super) fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

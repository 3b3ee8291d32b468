//! Interpreting: statements → the services keepalived would run, with a warning for
//! everything read differently from how it looks (unknown keywords with suggestions, invalid
//! values, what lb-agent does not carry).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    ops::RangeInclusive,
};

use super::{
    ImportError, Warning,
    keywords::{
        CHECK_KEYWORDS, DNS_KEYWORDS, FILE_CHECK_KEYWORDS, HTTP_KEYWORDS, KEEPALIVED_ONLY,
        KEEPALIVED_SCHEDULERS, MISC_KEYWORDS, ROOT_KEYWORDS, RS_KEYWORDS, SMTP_KEYWORDS,
        SSL_KEYWORDS, SYNC_DAEMON_OPTIONS, TRACK_FILE_KEYWORDS, UDP_KEYWORDS, URL_KEYWORDS,
        VS_KEYWORDS,
    },
    lexer::{Node, script_words, shell_join},
    parsed::{
        At, Check, CheckKind, ClientCert, DEFAULT_CONNECT_TIMEOUT, DEFAULT_PERSISTENCE_TIMEOUT,
        File, FileSpec, IPVS_SYNC_GROUP, IPVS_SYNC_PORT, IPVS_SYNC_TTL, Real, SYNC_KEY_FILE,
        Service, SyncDaemon, Timing, TrackFile, Url, Vrrp, number,
    },
};
use crate::config::{MAX_UDP_PAYLOAD, SyncConfig};

/// An unknown keyword, reported once its block is read (so the report can say what the value
/// it was probably meant for ended up as).
struct Unknown {
    line: usize,
    word: String,
    suggestion: Option<&'static str>,
    has_block: bool,
}

/// Collects warnings while the file is interpreted.
#[derive(Default)]
pub(super) struct Importer {
    pub(super) warnings: Vec<Warning>,
    /// The `track_file` blocks by name, for FILE_CHECK.
    pub(super) track_files: BTreeMap<String, TrackFile>,
    /// The track_files a converted FILE_CHECK names.
    pub(super) used_track_files: BTreeSet<String>,
    /// The `virtual_server_group` blocks by name (the first of a name counts).
    pub(super) groups: BTreeMap<String, usize>,
}

impl Importer {
    pub(super) fn warn(&mut self, line: usize, message: impl Into<String>) {
        self.warnings.push(Warning {
            line,
            file: None,
            message: message.into(),
        });
    }

    /// The whole file.
    pub(super) fn file(&mut self, nodes: &[Node]) -> File {
        let scripts: BTreeSet<&str> = nodes
            .iter()
            .filter(|n| n.keyword() == "vrrp_script")
            .filter_map(|n| n.word(1))
            .collect();
        // keepalived reads a track_file when it is defined; the first of a name counts.
        for n in nodes {
            if matches!(n.keyword(), "track_file" | "vrrp_track_file")
                && let Some(name) = n.word(1)
                && !self.track_files.contains_key(name)
            {
                let tf = self.track_file(n);
                self.track_files.insert(name.to_owned(), tf);
            }
        }
        for n in nodes
            .iter()
            .filter(|n| n.keyword() == "virtual_server_group")
        {
            if let Some(name) = n.word(1) {
                self.groups.entry(name.to_owned()).or_insert(n.line);
            }
        }
        let group_nodes: BTreeMap<&str, &Node> = nodes
            .iter()
            .rev()
            .filter(|n| n.keyword() == "virtual_server_group")
            .filter_map(|n| Some((n.word(1)?, n)))
            .collect();
        let mut file = File::default();
        let mut unknown = Vec::new();
        let mut track_files = Vec::new();
        // The first lvs_sync_daemon or old lvs_sync_daemon_interface: keepalived's sync daemon.
        let mut daemon = None;
        // The global SSL block's client certificate, for every SSL_GET.
        let mut ssl = None;
        for n in nodes {
            match n.keyword() {
                "virtual_server" => {
                    if let Some(s) = self.service(n, &group_nodes) {
                        file.services.push(s);
                    }
                }
                // Converted with the virtual_server that uses it.
                "virtual_server_group" => {}
                "vrrp_instance" => file.vrrp.push(self.vrrp(n, &scripts, &mut daemon)),
                "SSL" => ssl = self.global_ssl(n),
                // Judged once every FILE_CHECK is read.
                "track_file" | "vrrp_track_file" => track_files.push(n),
                kw => match KEEPALIVED_ONLY.iter().find(|(k, _)| *k == kw) {
                    Some((_, advice)) => {
                        let name = if n.block.is_some() {
                            n.word(1).map(|w| format!(" {w}")).unwrap_or_default()
                        } else {
                            String::new()
                        };
                        let but = if kw == "global_defs" {
                            self.global_defs(n, &mut daemon)
                        } else {
                            String::new()
                        };
                        self.warn(
                            n.line,
                            format!(
                                "{kw}{name} is handled by keepalived, not by lb-agent: \
                                 {advice}{but}"
                            ),
                        );
                    }
                    None => unknown.push(self.unknown(n, ROOT_KEYWORDS)),
                },
            }
        }
        self.report_unknown(unknown, |_| None);
        let ssl_gets = file
            .services
            .iter_mut()
            .flat_map(|s| &mut s.reals)
            .flat_map(|r| &mut r.checks)
            .filter(|c| c.keyword == "SSL_GET");
        for check in ssl_gets {
            check.client_cert = ssl.clone();
        }
        // A track_file a converted FILE_CHECK names is in that file_check; others are VRRP's.
        for n in track_files {
            let name = n.word(1).unwrap_or("");
            if !self.used_track_files.contains(name) {
                self.warn(
                    n.line,
                    format!(
                        "{} {name} is handled by keepalived, not by lb-agent (no FILE_CHECK \
                         names it): keep running keepalived for VRRP",
                        n.keyword()
                    ),
                );
            }
        }
        file.sync = self.sync(&file.vrrp, daemon);
        if nodes.is_empty() || file.services.is_empty() {
            let line = nodes.first().map_or(1, |n| n.line);
            self.warn(
                line,
                "no virtual_server to convert: the YAML has no virtual_servers",
            );
        }
        self.check_vips(&file);
        file
    }

    /// keepalived's global `SSL` block: the client certificate and key every SSL_GET presents
    /// become each ssl_get's `tls.certificate_file` and `tls.key_file`; its `ca` is not carried
    /// (keepalived never verifies with it), and a `password` means a key lb-agent cannot read.
    fn global_ssl(&mut self, n: &Node) -> Option<ClientCert> {
        self.extra_words(n, 1);
        let (mut certificate, mut key) = (None, None);
        let mut unknown = Vec::new();
        for c in n.children() {
            match c.keyword() {
                kw @ ("certificate" | "key") => {
                    let Some(path) = self.value(c, "the SSL_GETs present no client certificate")
                    else {
                        continue;
                    };
                    if !path.starts_with('/') {
                        self.warn(
                            c.line,
                            format!(
                                "SSL {kw} {path} is not an absolute path, which lb-agent needs \
                                 (it reads the file at start and reload whatever its working \
                                 directory): not converted; write tls.certificate_file and \
                                 tls.key_file in the ssl_gets"
                            ),
                        );
                        continue;
                    }
                    let at = Some((path.to_owned(), c.line));
                    if kw == "key" {
                        key = at
                    } else {
                        certificate = at
                    }
                }
                "ca" => self.not_carried(
                    c,
                    "keepalived loads it, but its SSL_GET never verifies a real's certificate, \
                     and neither does lb-agent's ssl_get by default: to verify, write tls: { \
                     verify: true, ca_file: ... } in the ssl_gets",
                ),
                "password" => self.warn(
                    c.line,
                    "SSL password is not carried: lb-agent reads unencrypted keys only; decrypt \
                     the key (openssl pkey -in KEY -out PLAIN, readable by root only) and point \
                     the ssl_gets' tls.key_file at it",
                ),
                _ => unknown.push(self.unknown(c, SSL_KEYWORDS)),
            }
        }
        self.report_unknown(unknown, |_| None);
        match (certificate, key) {
            (Some(certificate), Some(key)) => Some(ClientCert { certificate, key }),
            (Some((_, line)), None) | (None, Some((_, line))) => {
                self.warn(
                    line,
                    "SSL needs both certificate and key for a client certificate: not converted",
                );
                None
            }
            (None, None) => None,
        }
    }

    /// A `vrrp_instance`: not converted, but its interface and VIPs matter, and so does its old
    /// `lvs_sync_daemon_interface` (into `daemon` unless keepalived already has one).
    fn vrrp(
        &mut self,
        n: &Node,
        scripts: &BTreeSet<&str>,
        daemon: &mut Option<SyncDaemon>,
    ) -> Vrrp {
        let name = n.word(1).unwrap_or("").to_owned();
        let mut vrrp = Vrrp {
            name: name.clone(),
            interface: None,
            vips: Vec::new(),
            virtual_router_id: None,
        };
        for c in n.children() {
            match c.keyword() {
                "interface" => {
                    if let Some(i) = c.word(1) {
                        vrrp.interface = Some((i.to_owned(), c.line));
                    }
                }
                // Checked by keepalived (1 to 255); only read here as the default sync id.
                "virtual_router_id" => {
                    if let Some(id) = c.word(1).and_then(|v| v.parse::<u8>().ok()) {
                        vrrp.virtual_router_id = Some((id, c.line)).filter(|(id, _)| *id > 0);
                    }
                }
                // keepalived's old form of `lvs_sync_daemon INTERFACE THIS_INSTANCE`.
                "lvs_sync_daemon_interface" if !self.sync_already_set(c, daemon.as_ref()) => {
                    if let Some(mut d) = self.sync_daemon_interface(c) {
                        d.instance = Some(name.clone());
                        *daemon = Some(d);
                    }
                }
                "lvs_sync_daemon_interface" => {}
                "virtual_ipaddress" | "virtual_ipaddress_excluded" => {
                    for a in c.children() {
                        let addr = a.keyword();
                        let addr = addr.split_once('/').map_or(addr, |(a, _)| a);
                        vrrp.vips.push(addr.to_owned());
                    }
                }
                "track_script" => {
                    for s in c.children() {
                        if !scripts.contains(s.keyword()) {
                            self.warn(
                                s.line,
                                format!(
                                    "vrrp_instance {name} tracks the script {}, which no \
                                     vrrp_script in this file defines: keepalived ignores that \
                                     track (not converted; fix it in keepalived.conf)",
                                    s.keyword()
                                ),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        let owns = match vrrp.vips.len() {
            0 => "it owns no VIP".to_owned(),
            1 => format!("it owns the VIP {}", vrrp.vips[0]),
            _ => format!("it owns the VIPs {}", vrrp.vips.join(", ")),
        };
        self.warn(
            n.line,
            format!(
                "vrrp_instance {name} is handled by keepalived, not by lb-agent: keep running \
                 keepalived for VRRP ({owns})"
            ),
        );
        vrrp
    }

    /// A `global_defs` block stays keepalived's, but for its `lvs_sync_daemon` (into `daemon`
    /// unless keepalived already has one). Returns what to add to the block's warning.
    fn global_defs(&mut self, n: &Node, daemon: &mut Option<SyncDaemon>) -> String {
        let mut converted = None;
        for c in n.children() {
            if c.keyword() == "lvs_sync_daemon"
                && !self.sync_already_set(c, daemon.as_ref())
                && let Some(d) = self.sync_daemon(c)
            {
                converted = Some(d.line);
                *daemon = Some(d);
            }
        }
        converted.map_or_else(String::new, |line| {
            format!(", but for its lvs_sync_daemon (line {line}), which becomes sync:")
        })
    }

    /// Whether keepalived already runs a sync daemon, the first of the file: then it ignores
    /// the line `n` (with a warning).
    fn sync_already_set(&mut self, n: &Node, daemon: Option<&SyncDaemon>) -> bool {
        let Some(first) = daemon else {
            return false;
        };
        self.warn(
            n.line,
            format!(
                "{} is ignored, as keepalived runs one sync daemon: the {} of line {} becomes \
                 sync:",
                n.keyword(),
                first.keyword,
                first.line
            ),
        );
        true
    }

    /// The interface of an `lvs_sync_daemon` or `lvs_sync_daemon_interface` line; `None` (with a
    /// warning) when keepalived ignores the line for it.
    fn sync_interface(&mut self, n: &Node) -> Option<String> {
        let kw = n.keyword();
        let Some(name) = n.word(1) else {
            self.warn(
                n.line,
                format!("{kw} has no interface: ignored as keepalived does; there is no sync:"),
            );
            return None;
        };
        // IPVS takes interface names of up to 15 bytes (IP_VS_IFNAME_MAXLEN with its NUL).
        if name.len() > 15 {
            self.warn(
                n.line,
                format!(
                    "{kw}: the interface name {name} is {} bytes long, and keepalived ignores \
                     the line for a name longer than 15; there is no sync:",
                    name.len()
                ),
            );
            return None;
        }
        Some(name.to_owned())
    }

    /// A sync daemon on `interface`, its options still unset.
    fn new_sync_daemon(n: &Node, interface: String) -> SyncDaemon {
        SyncDaemon {
            line: n.line,
            keyword: n.keyword().to_owned(),
            raw: n.raw.clone(),
            interface,
            instance: None,
            id: None,
            id_note: None,
            group: None,
            ttl: None,
        }
    }

    /// The old `lvs_sync_daemon_interface INTERFACE` of a vrrp_instance (the caller sets the
    /// instance).
    fn sync_daemon_interface(&mut self, n: &Node) -> Option<SyncDaemon> {
        self.no_block(n);
        self.extra_words(n, 2);
        let interface = self.sync_interface(n)?;
        Some(Self::new_sync_daemon(n, interface))
    }

    /// `lvs_sync_daemon INTERFACE [VRRP_INSTANCE] [id ID] [maxlen LEN] [port PORT] [ttl TTL]
    /// [group ADDRESS]`, read as keepalived reads it: the options are looked for first, then a
    /// word in third place names the VRRP instance and one in fourth place is the sync id; a
    /// bad option is ignored and the rest applies. `None` when keepalived ignores the line.
    fn sync_daemon(&mut self, n: &Node) -> Option<SyncDaemon> {
        self.no_block(n);
        let interface = self.sync_interface(n)?;
        let mut d = Self::new_sync_daemon(n, interface);
        let mut i = 2;
        while let Some(word) = n.word(i) {
            if SYNC_DAEMON_OPTIONS.contains(&word) {
                self.sync_option(&mut d, n, word, n.word(i + 1));
                i += 2;
                continue;
            }
            match i {
                2 => d.instance = Some(word.to_owned()),
                3 => match word.parse::<u8>() {
                    Ok(id) => d.id = Some((id, n.line)),
                    Err(_) => {
                        let meant = suggest(word, SYNC_DAEMON_OPTIONS)
                            .map(|s| format!(" (did you mean \"{s}\"?)"))
                            .unwrap_or_default();
                        self.warn(
                            n.line,
                            format!(
                                "{}: \"{word}\"{meant}, the fourth word, is read as the sync id \
                                 and is not a whole number from 0 to 255, so keepalived ignores \
                                 it; the sync id stays the VRRP instance's virtual_router_id",
                                n.keyword()
                            ),
                        );
                    }
                },
                _ => {
                    let mut msg = format!("{}: unknown option \"{word}\"", n.keyword());
                    if let Some(s) = suggest(word, SYNC_DAEMON_OPTIONS) {
                        msg.push_str(&format!(" (did you mean \"{s}\"?)"));
                    }
                    msg.push_str(": ignored as keepalived does");
                    self.warn(n.line, msg);
                }
            }
            i += 1;
        }
        Some(d)
    }

    /// One option of an `lvs_sync_daemon` line and its value.
    fn sync_option(&mut self, d: &mut SyncDaemon, n: &Node, option: &str, value: Option<&str>) {
        let kw = n.keyword();
        let stays = match option {
            "inst" => "no VRRP instance is named".to_owned(),
            "id" => "the sync id stays the VRRP instance's virtual_router_id".to_owned(),
            "ttl" => format!("ttl stays {IPVS_SYNC_TTL}"),
            "group" => format!("group stays IPVS's {IPVS_SYNC_GROUP}"),
            _ => "it is not carried anyway".to_owned(),
        };
        let Some(v) = value else {
            let msg = format!("{kw} {option} has no value: ignored as keepalived does; {stays}");
            self.warn(n.line, msg);
            return;
        };
        let invalid = |im: &mut Self, expected: &str| {
            im.warn(
                n.line,
                format!("{kw} {option} {v}: not {expected}, so keepalived ignores it; {stays}"),
            );
        };
        match option {
            "inst" => match &d.instance {
                Some(name) => self.warn(
                    n.line,
                    format!(
                        "{kw} inst {v}: the VRRP instance is already {name}, so keepalived \
                         ignores it"
                    ),
                ),
                None => d.instance = Some(v.to_owned()),
            },
            "id" => match v.parse::<u8>() {
                Ok(id) => d.id = Some((id, n.line)),
                Err(_) => invalid(self, "a whole number from 0 to 255"),
            },
            "ttl" => match v.parse::<u8>() {
                Ok(ttl) if ttl > 0 => d.ttl = Some((ttl, n.line)),
                _ => invalid(self, "a whole number from 1 to 255"),
            },
            "group" => match v.parse::<IpAddr>() {
                Ok(group) if group.is_multicast() => d.group = Some((group, n.line)),
                Ok(_) => invalid(self, "a multicast address"),
                Err(_) => invalid(self, "an IP address"),
            },
            "maxlen" => self.warn(
                n.line,
                format!(
                    "{kw} maxlen {v} is not carried: lb-agent's sync datagrams always fit a \
                     1500-byte MTU"
                ),
            ),
            _ => self.warn(
                n.line,
                format!(
                    "{kw} port {v} is not carried: it is a port of IPVS's sync format; \
                     lb-agent's sync has its own, sync.port (default {})",
                    SyncConfig::DEFAULT_PORT
                ),
            ),
        }
    }

    /// The sync daemon keepalived runs (the first `lvs_sync_daemon` or
    /// `lvs_sync_daemon_interface` of the file, the others being ignored as they are read), its
    /// sync id resolved, with the note every conversion needs: lb-agent's sync is
    /// authenticated, keepalived's is not.
    fn sync(&mut self, vrrp: &[Vrrp], daemon: Option<SyncDaemon>) -> Option<SyncDaemon> {
        let mut d = daemon?;
        if d.id.is_none() {
            d.id_note = Some("no sync id in keepalived.conf: see the warnings".to_owned());
            let instance = d
                .instance
                .as_ref()
                .map(|name| (name, vrrp.iter().find(|v| v.name == *name)));
            let same = "every director needs the same sync.id";
            match instance {
                Some((name, Some(v))) => match v.virtual_router_id {
                    Some(id) => {
                        d.id = Some(id);
                        d.id_note = Some(format!(
                            "the virtual_router_id of vrrp_instance {name}, keepalived's default"
                        ));
                    }
                    None => self.warn(
                        d.line,
                        format!(
                            "{}: vrrp_instance {name} has no virtual_router_id to take the sync \
                             id from: sync.id 0 is used; {same}",
                            d.keyword
                        ),
                    ),
                },
                Some((name, None)) => self.warn(
                    d.line,
                    format!(
                        "{}: vrrp_instance {name}, whose virtual_router_id is keepalived's default \
                         sync id, is not in this file: sync.id 0 is used; {same}",
                        d.keyword
                    ),
                ),
                None => self.warn(
                    d.line,
                    format!(
                        "{} names no VRRP instance and no id: sync.id 0 is used; {same}",
                        d.keyword
                    ),
                ),
            }
        }
        self.warn(
            d.line,
            format!(
                "{} is converted to sync:, lb-agent's own director sync, on UDP port {} (not \
                 IPVS's {IPVS_SYNC_PORT}). keepalived's sync has no authentication; lb-agent's \
                 requires a shared secret: create {SYNC_KEY_FILE} with the same secret on every \
                 director, for example `head -c 32 /dev/urandom | base64 > {SYNC_KEY_FILE}; \
                 chmod 600 {SYNC_KEY_FILE}` on one, then copy the file to the others",
                d.keyword,
                SyncConfig::DEFAULT_PORT
            ),
        );
        Some(d)
    }

    /// With no interface given: the first vrrp_instance's.
    pub(super) fn interface_from_vrrp(&mut self, file: &File) -> Result<String, ImportError> {
        let found = file
            .vrrp
            .iter()
            .find_map(|v| v.interface.clone().map(|i| (v, i)));
        let Some((v, (name, line))) = found else {
            return Err(ImportError::NoInterface);
        };
        self.warn(
            line,
            format!(
                "no interface given: using {name}, the interface of vrrp_instance {} (the VIP \
                 traffic must arrive there)",
                v.name
            ),
        );
        Ok(name)
    }

    /// Services whose VIP no vrrp_instance of the file holds (a file without vrrp_instance is
    /// explained in the YAML header instead).
    fn check_vips(&mut self, file: &File) {
        if file.vrrp.is_empty() {
            return;
        }
        let held: BTreeSet<IpAddr> = file
            .vrrp
            .iter()
            .flat_map(|v| v.vips.iter())
            .filter_map(|a| a.parse().ok())
            .collect();
        let mut told = BTreeSet::new();
        for s in &file.services {
            if !held.contains(&s.vip) && told.insert(s.vip) {
                self.warn(
                    s.line,
                    format!(
                        "VIP {} is not a virtual_ipaddress of any vrrp_instance in this file: \
                         with manage_vip: false, lb-agent expects keepalived or something else \
                         to hold it (set manage_vip: true to have lb-agent add it)",
                        s.vip
                    ),
                );
            }
        }
    }

    /// An unknown keyword, to report after its block is read.
    fn unknown(&mut self, n: &Node, known: &[&'static str]) -> Unknown {
        Unknown {
            line: n.line,
            word: n.keyword().to_owned(),
            suggestion: suggest(n.keyword(), known),
            has_block: n.block.is_some(),
        }
    }

    /// Reports unknown keywords; `stays` says what the suggested keyword's value is.
    fn report_unknown(&mut self, unknown: Vec<Unknown>, stays: impl Fn(&str) -> Option<String>) {
        for u in unknown {
            let mut msg = format!("unknown keyword \"{}\"", u.word);
            if let Some(s) = u.suggestion {
                msg.push_str(&format!(" (did you mean \"{s}\"?)"));
            }
            if u.has_block {
                msg.push_str(
                    ": ignored with its block (keepalived ignores the keyword but then reads the \
                     block's lines into the enclosing block, which the block's `}` closes \
                     early): fix the keyword",
                );
            } else {
                msg.push_str(": ignored as keepalived does");
                if let Some(what) = u.suggestion.and_then(&stays) {
                    msg.push_str("; ");
                    msg.push_str(&what);
                }
            }
            self.warn(u.line, msg);
        }
    }

    /// Word 1 of `n`, warning when it is missing or followed by more words.
    fn value<'n>(&mut self, n: &'n Node, stays: &str) -> Option<&'n str> {
        let Some(v) = n.word(1) else {
            self.warn(
                n.line,
                format!(
                    "{} has no value: ignored as keepalived does; {stays}",
                    n.keyword()
                ),
            );
            return None;
        };
        self.extra_words(n, 2);
        self.no_block(n);
        Some(v)
    }

    /// Warns about words after the first `used` ones.
    fn extra_words(&mut self, n: &Node, used: usize) {
        if n.words.len() > used {
            self.warn(
                n.line,
                format!(
                    "\"{}\" after {} is ignored, as keepalived ignores extra words (one keyword \
                     per line)",
                    n.words[used..].join(" "),
                    n.words[..used].join(" ")
                ),
            );
        }
    }

    /// Warns about a block after a keyword that takes none.
    fn no_block(&mut self, n: &Node) {
        if n.block.is_some() {
            self.warn(
                n.line,
                format!(
                    "{} takes no block: its block is ignored (keepalived would read the block's \
                     lines into the enclosing block): remove the braces",
                    n.keyword()
                ),
            );
        }
    }

    /// A whole number in `range`, or a warning that keepalived ignores the value.
    fn uint(&mut self, n: &Node, range: RangeInclusive<u64>, stays: &str) -> Option<u64> {
        let v = self.value(n, stays)?;
        match v.parse::<u64>() {
            Ok(x) if range.contains(&x) => Some(x),
            _ => {
                let expected = format!("a whole number from {} to {}", range.start(), range.end());
                self.invalid(n, v, &expected, stays);
                None
            }
        }
    }

    /// A number of seconds (fractions allowed, as keepalived's timers).
    fn seconds(&mut self, n: &Node, min: f64, stays: &str) -> Option<f64> {
        let v = self.value(n, stays)?;
        match v.parse::<f64>() {
            Ok(x) if x.is_finite() && x >= min => Some(x),
            _ => {
                self.invalid(n, v, "a number of seconds", stays);
                None
            }
        }
    }

    /// A port, 1 to 65535.
    fn port(&mut self, n: &Node, stays: &str) -> Option<u16> {
        let v = self.value(n, stays)?;
        match v.parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => {
                self.invalid(n, v, "a port (1 to 65535)", stays);
                None
            }
        }
    }

    /// An IP address.
    fn address(&mut self, n: &Node, stays: &str) -> Option<IpAddr> {
        let v = self.value(n, stays)?;
        match v.parse::<IpAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.invalid(n, v, "an IP address", stays);
                None
            }
        }
    }

    /// A flag with keepalived's optional `true|on|yes` / `false|off|no`.
    fn flag(&mut self, n: &Node, stays: &str) -> Option<bool> {
        self.no_block(n);
        self.extra_words(n, 2);
        match n.word(1) {
            None => Some(true),
            Some("true" | "on" | "yes") => Some(true),
            Some("false" | "off" | "no") => Some(false),
            Some(v) => {
                self.invalid(n, v, "true/on/yes or false/off/no", stays);
                None
            }
        }
    }

    /// A flag keepalived takes without a value (a value is ignored, as keepalived does).
    fn bare_flag(&mut self, n: &Node) -> bool {
        self.no_block(n);
        self.extra_words(n, 1);
        true
    }

    fn invalid(&mut self, n: &Node, v: &str, expected: &str, stays: &str) {
        self.warn(
            n.line,
            format!(
                "{} {v}: not {expected}, so keepalived ignores it; {stays}",
                n.keyword()
            ),
        );
    }

    /// A keyword keepalived accepts but lb-agent does not carry.
    fn not_carried(&mut self, n: &Node, why: &str) {
        self.warn(
            n.line,
            format!("{} is not carried by lb-agent: ignored ({why})", n.raw),
        );
    }

    /// A script: the command (word 1, split into arguments) as a `sh -c` line. Later words are
    /// the user and group keepalived runs it as, which lb-agent does not do.
    fn script(&mut self, n: &Node, stays: &str) -> Option<String> {
        self.no_block(n);
        let all = match script_words(&n.raw) {
            Ok(w) => w,
            Err(e) => {
                self.warn(
                    n.line,
                    format!(
                        "{}: {e}: keepalived ignores the script; {stays}",
                        n.keyword()
                    ),
                );
                return None;
            }
        };
        let Some(command) = all.get(1) else {
            self.warn(
                n.line,
                format!(
                    "{} has no script: ignored as keepalived does; {stays}",
                    n.keyword()
                ),
            );
            return None;
        };
        let argv = match script_words(command) {
            Ok(a) if !a.is_empty() => a,
            Ok(_) => {
                self.warn(
                    n.line,
                    format!(
                        "{} has an empty script: ignored as keepalived does; {stays}",
                        n.keyword()
                    ),
                );
                return None;
            }
            Err(e) => {
                self.warn(
                    n.line,
                    format!(
                        "{}: {e}: keepalived ignores the script; {stays}",
                        n.keyword()
                    ),
                );
                return None;
            }
        };
        if all.len() > 2 {
            self.warn(
                n.line,
                format!(
                    "{}: keepalived runs \"{}\" as user {} (the words after the script); \
                     lb-agent runs its scripts as its own user. To pass arguments, quote the \
                     whole command line",
                    n.keyword(),
                    command,
                    all[2..].join(" and group ")
                ),
            );
        }
        Some(shell_join(&argv))
    }

    /// The entries of `virtual_server_group` `n` as the YAML's `vips` writes them, with the
    /// first address and port; entries lb-agent cannot serve are reported and left out.
    fn group_entries(&mut self, n: &Node) -> Vec<(String, IpAddr, u16)> {
        let mut out = Vec::new();
        for e in n.children() {
            let what = e.words.join(" ");
            if e.keyword() == "fwmark" {
                self.warn(
                    e.line,
                    format!(
                        "{what}: lb-agent sees no firewall marks; entry not converted (give the \
                         addresses and ports the mark stands for as entries)"
                    ),
                );
                continue;
            }
            let addr = e.keyword();
            let port = e.word(1).map(str::parse::<u16>);
            let port = match port {
                Some(Ok(p)) if p != 0 => p,
                None | Some(Ok(_)) => {
                    self.warn(
                        e.line,
                        format!(
                            "{what}: an entry without a port is every port of the address, \
                             which lb-agent does not serve; entry not converted"
                        ),
                    );
                    continue;
                }
                Some(Err(_)) => {
                    self.warn(
                        e.line,
                        format!("{what}: not a port, so keepalived skips the entry; not converted"),
                    );
                    continue;
                }
            };
            self.extra_words(e, 2);
            // The first address, for what depends on the family (the rest is lb-agent's to
            // check, with keepalived's range rules).
            let first = addr.split(['-', '/']).next().unwrap_or(addr);
            let Ok(first) = first.parse::<IpAddr>() else {
                self.warn(
                    e.line,
                    format!("{what}: not an address, so keepalived skips the entry; not converted"),
                );
                continue;
            };
            let text = if first.is_ipv6() {
                format!("[{addr}]:{port}")
            } else {
                format!("{addr}:{port}")
            };
            out.push((text, first, port));
        }
        out
    }

    /// A `virtual_server` block; `None` when keepalived would not create it.
    fn service(&mut self, n: &Node, groups: &BTreeMap<&str, &Node>) -> Option<Service> {
        let what = n.words[1..].join(" ");
        let mut group = None;
        match n.word(1) {
            Some("fwmark") => {
                self.warn(
                    n.line,
                    format!(
                        "virtual_server {what} is not supported by lb-agent (XDP sees no \
                         firewall marks): block skipped"
                    ),
                );
                return None;
            }
            Some("group") => {
                let name = n.word(2).unwrap_or("");
                let Some(g) = groups.get(name) else {
                    self.warn(
                        n.line,
                        format!(
                            "virtual_server group {name}: no virtual_server_group {name}, so \
                             keepalived skips the block; not converted"
                        ),
                    );
                    return None;
                };
                let entries = self.group_entries(g);
                if entries.is_empty() {
                    self.warn(
                        n.line,
                        format!(
                            "virtual_server group {name}: no entry of the group can be served: \
                             block skipped"
                        ),
                    );
                    return None;
                }
                group = Some((name.to_owned(), entries));
            }
            None => {
                self.warn(
                    n.line,
                    "virtual_server without an address: block skipped, as keepalived does",
                );
                return None;
            }
            Some(_) => {}
        }
        let vip = match &group {
            Some((_, entries)) => Some(entries[0].1),
            None => n.word(1).and_then(|v| v.parse::<IpAddr>().ok()),
        };
        let port = match (&group, n.word(2)) {
            (Some((_, entries)), _) => Some(Some(entries[0].2)),
            (None, None) => Some(None),
            (None, Some(p)) => p.parse::<u16>().ok().map(Some),
        };
        let (Some(vip), Some(port)) = (vip, port) else {
            self.warn(
                n.line,
                format!(
                    "virtual_server {what}: not an IP address and port, so keepalived skips the \
                     block; not converted"
                ),
            );
            return None;
        };
        self.extra_words(n, 3);
        if n.block.is_none() {
            self.warn(
                n.line,
                format!("virtual_server {what} has no block: converted with keepalived's defaults"),
            );
        }
        let mut s = Service {
            line: n.line,
            group: group.map(|(name, entries)| {
                let vips = entries.into_iter().map(|(text, _, _)| text).collect();
                (name, vips)
            }),
            vip,
            port,
            protocol: None,
            lb_algo: None,
            lb_flags: Vec::new(),
            lb_kind: None,
            persistence_timeout: None,
            persistence_granularity: None,
            delay_loop: None,
            warmup: None,
            alpha: None,
            omega: None,
            inhibit_on_failure: None,
            quorum: None,
            hysteresis: None,
            quorum_up: None,
            quorum_down: None,
            sorry_server: None,
            virtualhost: None,
            timing: Timing::default(),
            reals: Vec::new(),
            misspelled: Vec::new(),
        };
        let mut unknown = Vec::new();
        for c in n.children() {
            self.service_keyword(&mut s, c, &mut unknown);
        }
        s.misspelled = unknown
            .iter()
            .filter(|u| !u.has_block)
            .filter_map(|u| Some((u.suggestion?, u.line, u.word.clone())))
            .collect();
        self.report_unknown(unknown, |k| service_stays(&s, k));
        self.forwarding(&mut s);
        self.after_service(&s);
        Some(s)
    }

    fn service_keyword(&mut self, s: &mut Service, c: &Node, unknown: &mut Vec<Unknown>) {
        let l = c.line;
        match c.keyword() {
            "delay_loop" => {
                if let Some(v) = self.seconds(c, 1e-6, "delay_loop stays 60") {
                    s.delay_loop = Some((v, l));
                }
            }
            "lb_algo" | "lvs_sched" => {
                let stays = format!("lb_algo stays {}", current(&s.lb_algo, "wlc"));
                if let Some(v) = self.value(c, &stays) {
                    if KEEPALIVED_SCHEDULERS.contains(&v) {
                        s.lb_algo = Some((v.to_owned(), l));
                    } else {
                        let hint = if KEEPALIVED_SCHEDULERS.contains(&v.to_lowercase().as_str()) {
                            " (scheduler names are lower case)"
                        } else {
                            ""
                        };
                        self.warn(
                            l,
                            format!(
                                "{} {v} is not a keepalived scheduler{hint}: ignored as \
                                 keepalived does; {stays}",
                                c.keyword()
                            ),
                        );
                    }
                }
            }
            "lb_kind" | "lvs_method" => {
                let stays = format!("lb_kind stays {}", current(&s.lb_kind, "NAT"));
                if let Some(v) = self.value(c, &stays) {
                    s.lb_kind = self
                        .method(c, v, &stays)
                        .map(|m| (m, l))
                        .or(s.lb_kind.take());
                }
            }
            "persistence_timeout" => {
                if c.word(1).is_none() {
                    self.no_block(c);
                    s.persistence_timeout = Some((DEFAULT_PERSISTENCE_TIMEOUT, l));
                } else if let Some(v) = self.uint(c, 1..=31_536_000, "persistence stays off") {
                    s.persistence_timeout = Some((v, l));
                }
            }
            "persistence_granularity" => {
                let stays = granularity_stays(s.vip);
                if let Some(v) = self.value(c, stays) {
                    let (valid, expected) = match s.vip {
                        IpAddr::V4(_) => (v.parse::<std::net::Ipv4Addr>().is_ok(), "a netmask"),
                        IpAddr::V6(_) => (
                            v.parse::<u8>().is_ok_and(|p| (1..=128).contains(&p)),
                            "a prefix length from 1 to 128",
                        ),
                    };
                    if valid {
                        s.persistence_granularity = Some((v.to_owned(), l));
                    } else {
                        self.invalid(c, v, expected, stays);
                    }
                }
            }
            "protocol" => {
                let stays = format!("protocol stays {}", current(&s.protocol, "TCP"));
                if let Some(v) = self.value(c, &stays) {
                    match v.to_ascii_uppercase().as_str() {
                        "TCP" | "UDP" | "SCTP" => s.protocol = Some((v.to_ascii_lowercase(), l)),
                        _ => self.warn(
                            l,
                            format!(
                                "protocol {v} is not TCP, UDP or SCTP: ignored as keepalived \
                                 does; {stays}"
                            ),
                        ),
                    }
                }
            }
            "alpha" => s.alpha = Some((self.bare_flag(c), l)),
            "omega" => s.omega = Some((self.bare_flag(c), l)),
            "inhibit_on_failure" => s.inhibit_on_failure = Some((self.bare_flag(c), l)),
            "quorum" => {
                // keepalived sets an invalid quorum to 1.
                let q = self.uint(c, 1..=u64::from(u32::MAX), "quorum is set to 1");
                s.quorum = Some((q.unwrap_or(1), l));
            }
            "hysteresis" => {
                if let Some(v) = self.uint(c, 0..=u64::from(u32::MAX), "hysteresis stays 0") {
                    s.hysteresis = Some((v, l));
                }
            }
            "quorum_up" => {
                if let Some(v) = self.script(c, "no script runs when quorum is gained") {
                    s.quorum_up = s.quorum_up.take().or(Some((v, l)));
                }
            }
            "quorum_down" => {
                if let Some(v) = self.script(c, "no script runs when quorum is lost") {
                    s.quorum_down = s.quorum_down.take().or(Some((v, l)));
                }
            }
            "sorry_server" => {
                self.no_block(c);
                self.extra_words(c, 3);
                let ip = c.word(1).and_then(|v| v.parse::<IpAddr>().ok());
                let port = match c.word(2) {
                    None => Some(None),
                    Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).map(Some),
                };
                match (ip, port) {
                    (Some(ip), Some(port)) => s.sorry_server = Some((ip, port, l)),
                    _ => self.warn(
                        l,
                        format!(
                            "{}: not an IP address and port, so keepalived ignores it; there is \
                             no sorry server",
                            c.raw
                        ),
                    ),
                }
            }
            "warmup" => {
                if let Some(v) = self.seconds(c, 0.0, "warmup stays 0") {
                    s.warmup = Some((v, l));
                }
            }
            "connect_timeout" | "retry" | "delay_before_retry" => {
                self.timing(&mut s.timing, c, "inherited from keepalived's default");
            }
            "real_server" => {
                if let Some(r) = self.real(c) {
                    s.reals.push(r);
                }
            }
            "ip_family" => {
                let family = if s.vip.is_ipv4() { "inet" } else { "inet6" };
                if c.word(1) != Some(family) {
                    self.warn(
                        l,
                        format!("{}: the VIP {} is {family}: ignored", c.raw, s.vip),
                    );
                }
            }
            "ha_suspend" => self.not_carried(
                c,
                "lb-agent checks the reals whether or not this director holds the VIP",
            ),
            "virtualhost" => self.virtualhost(&mut s.virtualhost, c),
            "smtp_alert" => self.not_carried(c, "lb-agent has no e-mail alerts; see its logs"),
            "snmp_name" => self.not_carried(c, "lb-agent has no SNMP; see its metrics"),
            "hashed" | "flag-1" | "flag-2" | "flag-3" => self.not_carried(
                c,
                "an IPVS scheduler flag; lb-agent's schedulers are described in its README",
            ),
            kw @ ("ops" | "sh-port" | "sh-fallback" | "mh-port" | "mh-fallback") => {
                // keepalived applies sh-* and mh-* only when the scheduler read so far is sh
                // (mh), and reports the others.
                let algo = current(&s.lb_algo, "wlc");
                match kw.split_once('-') {
                    Some((sched, _)) if sched != algo => self.warn(
                        l,
                        format!(
                            "{kw} only applies to the {sched} scheduler, and the scheduler is \
                             {algo} here: keepalived ignores it; not converted"
                        ),
                    ),
                    _ => {
                        if !s.lb_flags.iter().any(|(f, _)| f == kw) {
                            s.lb_flags.push((kw.to_owned(), l));
                        }
                    }
                }
            }
            "persistence_engine" => {
                self.not_carried(c, "lb-agent's persistence is by client address only")
            }
            "weight" => self.not_carried(c, "a virtual_server_group weight"),
            "sorry_server_inhibit" | "sorry_server_lvs_method" => {
                self.not_carried(c, "lb-agent forwards to the sorry server like to any real")
            }
            "nat_mask" => self.not_carried(c, "lb-agent does direct routing only"),
            _ => unknown.push(self.unknown(c, VS_KEYWORDS)),
        }
    }

    /// `lb_kind` / `lvs_method`: keepalived knows NAT, DR and TUN, in capitals.
    fn method(&mut self, c: &Node, v: &str, stays: &str) -> Option<String> {
        if matches!(v, "NAT" | "DR" | "TUN") {
            return Some(v.to_owned());
        }
        let hint = if matches!(v.to_ascii_uppercase().as_str(), "NAT" | "DR" | "TUN") {
            " (keepalived wants it in capitals)"
        } else {
            ""
        };
        self.warn(
            c.line,
            format!(
                "{} {v} is not NAT, DR or TUN{hint}: ignored as keepalived does; {stays}",
                c.keyword()
            ),
        );
        None
    }

    /// The forwarding method of the service: a real's `lvs_method` overrides the service's, and
    /// lb-agent has one per service.
    fn forwarding(&mut self, s: &mut Service) {
        let methods: BTreeSet<&str> = s
            .reals
            .iter()
            .map(|r| {
                r.method
                    .as_ref()
                    .or(s.lb_kind.as_ref())
                    .map_or("NAT", |(m, _)| m.as_str())
            })
            .collect();
        if methods.len() == 1 {
            let only = methods.iter().next().copied().unwrap_or("NAT");
            let line = s
                .reals
                .iter()
                .find_map(|r| r.method.as_ref().map(|(_, l)| *l));
            if s.lb_kind.as_ref().map(|(m, _)| m.as_str()) != Some(only)
                && let Some(line) = line
            {
                // Every real overrides the service's method the same way.
                s.lb_kind = Some((only.to_owned(), line));
            }
        } else if methods.len() > 1 {
            let list: Vec<&str> = methods.into_iter().collect();
            self.warn(
                s.line,
                format!(
                    "the real servers use different forwarding methods ({}); lb-agent has one \
                     per virtual server: lb_kind {} is used",
                    list.join(", "),
                    current(&s.lb_kind, "NAT")
                ),
            );
        }
    }

    /// `connect_timeout`, `retry` or `delay_before_retry` into `t`.
    fn timing(&mut self, t: &mut Timing, c: &Node, stays: &str) {
        let l = c.line;
        let stays = format!("{} {stays}", c.keyword());
        match c.keyword() {
            "connect_timeout" => {
                if let Some(v) = self.seconds(c, 1e-6, &stays) {
                    t.connect_timeout = Some((v, l));
                }
            }
            "retry" | "nb_get_retry" => {
                if let Some(v) = self.uint(c, 0..=u64::from(u32::MAX), &stays) {
                    t.retry = Some((v, l));
                }
            }
            "delay_before_retry" => {
                if let Some(v) = self.seconds(c, 0.0, &stays) {
                    t.delay_before_retry = Some((v, l));
                }
            }
            _ => {
                if let Some(v) = self.seconds(c, 0.0, &stays) {
                    t.warmup = Some((v, l));
                }
            }
        }
    }

    /// A `real_server` block; `None` when keepalived would skip it.
    fn real(&mut self, n: &Node) -> Option<Real> {
        let ip = n.word(1).and_then(|v| v.parse::<IpAddr>().ok());
        let port = match n.word(2) {
            None => Some(None),
            Some(p) => p.parse::<u16>().ok().map(Some),
        };
        let (Some(ip), Some(port)) = (ip, port) else {
            self.warn(
                n.line,
                format!(
                    "{}: not an IP address and port, so keepalived skips this real server; not \
                     converted",
                    n.raw
                ),
            );
            return None;
        };
        self.extra_words(n, 3);
        let mut r = Real {
            line: n.line,
            ip,
            port,
            weight: None,
            uthreshold: None,
            lthreshold: None,
            inhibit_on_failure: None,
            notify_up: None,
            notify_down: None,
            method: None,
            virtualhost: None,
            timing: Timing::default(),
            delay_loop: None,
            checks: Vec::new(),
        };
        let mut unknown = Vec::new();
        for c in n.children() {
            self.real_keyword(&mut r, c, &mut unknown);
        }
        self.check_thresholds(&mut r);
        self.report_unknown(unknown, |k| real_stays(&r, k));
        Some(r)
    }

    /// A lower threshold without an upper one (or above it) does nothing in IPVS; the
    /// configuration refuses it, so it is left out with a warning.
    fn check_thresholds(&mut self, r: &mut Real) {
        let Some((lower, line)) = r.lthreshold else {
            return;
        };
        let upper = r.uthreshold.map_or(0, |(u, _)| u);
        if lower == 0 {
            return;
        }
        if upper == 0 {
            self.warn(
                line,
                format!(
                    "lthreshold {lower} without an uthreshold never takes effect in IPVS; not \
                     converted"
                ),
            );
            r.lthreshold = None;
        } else if lower > upper {
            self.warn(
                line,
                format!("lthreshold {lower} is above uthreshold {upper}; not converted"),
            );
            r.lthreshold = None;
        }
    }

    fn real_keyword(&mut self, r: &mut Real, c: &Node, unknown: &mut Vec<Unknown>) {
        let l = c.line;
        match c.keyword() {
            "weight" => {
                let max = u64::from(i32::MAX.unsigned_abs());
                if let Some(v) = self.uint(c, 0..=max, "weight stays 1") {
                    r.weight = Some((v, l));
                }
            }
            "inhibit_on_failure" => {
                let stays = "inhibit_on_failure stays the virtual server's";
                if let Some(v) = self.flag(c, stays) {
                    r.inhibit_on_failure = Some((v, l));
                }
            }
            "notify_up" => {
                if let Some(v) = self.script(c, "no script runs when the real comes up") {
                    r.notify_up = r.notify_up.take().or(Some((v, l)));
                }
            }
            "notify_down" => {
                if let Some(v) = self.script(c, "no script runs when the real goes down") {
                    r.notify_down = r.notify_down.take().or(Some((v, l)));
                }
            }
            "lvs_method" => {
                let stays = "the real uses the virtual server's lb_kind";
                if let Some(v) = self.value(c, stays) {
                    r.method = self.method(c, v, stays).map(|m| (m, l)).or(r.method.take());
                }
            }
            "connect_timeout" | "retry" | "delay_before_retry" | "warmup" => {
                self.timing(&mut r.timing, c, "stays the virtual server's");
            }
            "delay_loop" => {
                let stays = "the virtual server's delay_loop applies";
                if let Some(v) = self.seconds(c, 1e-6, stays) {
                    r.delay_loop = Some((v, l));
                }
            }
            "alpha" => self.not_carried(
                c,
                "lb-agent's alpha is per virtual server: set alpha there to start every real down",
            ),
            "uthreshold" => {
                let max = u64::from(i32::MAX.unsigned_abs());
                if let Some(v) = self.uint(c, 0..=max, "the real has no upper threshold") {
                    r.uthreshold = Some((v, l));
                }
            }
            "lthreshold" => {
                let max = u64::from(i32::MAX.unsigned_abs());
                if let Some(v) = self.uint(c, 0..=max, "the real has no lower threshold") {
                    r.lthreshold = Some((v, l));
                }
            }
            "smtp_alert" => self.not_carried(c, "lb-agent has no e-mail alerts; see its logs"),
            "virtualhost" => self.virtualhost(&mut r.virtualhost, c),
            "snmp_name" => self.not_carried(c, "lb-agent has no SNMP; see its metrics"),
            "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "MISC_CHECK" | "UDP_CHECK" | "DNS_CHECK"
            | "PING_CHECK" | "SMTP_CHECK" => {
                // keepalived runs every checker of a real; it is up while all of them pass.
                r.checks.extend(self.check(c));
            }
            "FILE_CHECK" => r.checks.extend(self.file_check(c)),
            kw @ "BFD_CHECK" => self.warn(
                l,
                format!(
                    "{kw} is not supported by lb-agent (it has no BFD): not converted; the \
                     real's other checkers decide, and without one the real is always up"
                ),
            ),
            _ => unknown.push(self.unknown(c, RS_KEYWORDS)),
        }
    }

    /// What can only be judged once the virtual server is read (keepalived resolves what
    /// checkers inherit at the end): per-real and per-checker `delay_loop`, and the retry a
    /// TCP_CHECK with `nb_get_retry` really ran with.
    fn after_service(&mut self, s: &Service) {
        let service = s.delay_loop.map_or(60.0, |(d, _)| d);
        for r in &s.reals {
            let own = std::iter::once((r.delay_loop, "its real_server"))
                .chain(r.checks.iter().map(|c| (c.delay_loop, c.keyword)));
            for (v, of) in own {
                if let Some((v, l)) = v.filter(|(v, _)| *v != service) {
                    self.warn(
                        l,
                        format!(
                            "delay_loop {} of {of} is not carried: lb-agent checks every real of \
                             a virtual server every delay_loop ({} here)",
                            number(v),
                            number(service)
                        ),
                    );
                }
            }
            for ck in &r.checks {
                if let Some((v, l)) = ck.tcp_nb_get_retry {
                    let ran = ck
                        .timing
                        .retry
                        .or(r.timing.retry)
                        .or(s.timing.retry)
                        .map_or(1, |(r, _)| r);
                    self.warn(
                    l,
                    format!(
                        "unknown keyword \"nb_get_retry\" in TCP_CHECK (only HTTP_GET and SSL_GET \
                         take this old name of retry): ignored as keepalived does; this check \
                         ran with retry {ran} and is converted as it ran; write `retry: {v}` in \
                         tcp_check if {v} retries were meant"
                    ),
                );
                }
            }
        }
    }

    /// A `track_file NAME { file PATH; weight W [reverse]; init_file [VALUE] [overwrite] }`
    /// block: what a FILE_CHECK naming it reads.
    fn track_file(&mut self, n: &Node) -> TrackFile {
        let mut tf = TrackFile {
            line: n.line,
            path: None,
            weight: None,
            init_file: None,
        };
        let mut unknown = Vec::new();
        for c in n.children() {
            let l = c.line;
            match c.keyword() {
                "file" => {
                    let stays = "the track_file has no file, and FILE_CHECKs naming it are not \
                                 converted";
                    if let Some(v) = self.value(c, stays) {
                        tf.path = tf.path.take().or(Some((v.to_owned(), l)));
                    }
                }
                "weight" => {
                    if let Some(w) = self.file_weight(c, -254..=254, "the weight stays 1") {
                        tf.weight = Some((w, l));
                    }
                }
                "init_file" => {
                    if let Some(i) = self.init_file(c) {
                        tf.init_file = Some((i, l));
                    }
                }
                _ => unknown.push(self.unknown(c, TRACK_FILE_KEYWORDS)),
            }
        }
        self.report_unknown(unknown, |_| None);
        tf
    }

    /// `weight W [reverse|noreverse]` of a track_file or FILE_CHECK.
    fn file_weight(
        &mut self,
        n: &Node,
        range: RangeInclusive<i64>,
        stays: &str,
    ) -> Option<(i64, bool)> {
        self.no_block(n);
        self.extra_words(n, 3);
        let Some(v) = n.word(1) else {
            self.warn(n.line, format!("weight has no value: ignored; {stays}"));
            return None;
        };
        let w = match v.parse::<i64>() {
            Ok(w) if range.contains(&w) => w,
            _ => {
                let expected = format!("a whole number from {} to {}", range.start(), range.end());
                self.invalid(n, v, &expected, stays);
                return None;
            }
        };
        match n.word(2) {
            None | Some("noreverse") => Some((w, false)),
            Some("reverse") => Some((w, true)),
            Some(o) => {
                self.invalid(n, o, "reverse or noreverse", stays);
                None
            }
        }
    }

    /// `init_file [VALUE] [overwrite]`: the value (default 0) and whether to overwrite.
    fn init_file(&mut self, n: &Node) -> Option<(i64, bool)> {
        self.no_block(n);
        let (mut value, mut overwrite) = (0, false);
        for w in &n.words[1..] {
            match w.as_str() {
                "overwrite" => overwrite = true,
                v => match v.parse::<i32>() {
                    Ok(x) => value = i64::from(x),
                    Err(_) => {
                        self.invalid(n, v, "a whole number or overwrite", "the value stays 0");
                    }
                },
            }
        }
        Some((value, overwrite))
    }

    /// A `FILE_CHECK { track_file NAME; weight W [reverse] }` block, resolved against the
    /// track_file it names (which keepalived needs defined before).
    fn file_check(&mut self, n: &Node) -> Option<Check> {
        self.extra_words(n, 1);
        let mut name: Option<(String, usize)> = None;
        let mut weight: At<(i64, bool)> = None;
        let mut unknown = Vec::new();
        for c in n.children() {
            match c.keyword() {
                "track_file" => {
                    let stays = "the FILE_CHECK names no track_file";
                    if let Some(v) = self.value(c, stays) {
                        name = Some((v.to_owned(), c.line));
                    }
                }
                "weight" => {
                    let max = i64::from(i32::MAX);
                    let stays = "the track_file's weight applies";
                    if let Some(w) = self.file_weight(c, -max..=max, stays) {
                        weight = Some((w, c.line));
                    }
                }
                _ => unknown.push(self.unknown(c, FILE_CHECK_KEYWORDS)),
            }
        }
        self.report_unknown(unknown, |_| None);
        let Some((name, name_line)) = name else {
            self.warn(
                n.line,
                "FILE_CHECK has no track_file, so keepalived drops this checker: not converted",
            );
            return None;
        };
        let tf = match self.track_files.get(&name) {
            Some(tf) if tf.line < n.line => tf.clone(),
            found => {
                let why = if found.is_some() {
                    "is defined after it"
                } else {
                    "is not defined"
                };
                self.warn(
                    name_line,
                    format!(
                        "track_file {name} {why}, so keepalived drops this FILE_CHECK: not \
                         converted"
                    ),
                );
                return None;
            }
        };
        let Some((path, path_line)) = tf.path.clone() else {
            self.warn(
                tf.line,
                format!("track_file {name} has no file: its FILE_CHECK is not converted"),
            );
            return None;
        };
        if !path.starts_with('/') {
            self.warn(
                path_line,
                format!(
                    "track_file {name}'s file {path} is not an absolute path, which lb-agent \
                     needs: its FILE_CHECK is not converted"
                ),
            );
            return None;
        }
        self.used_track_files.insert(name);
        let ((w, reverse), weight_line) = weight.or(tf.weight).unwrap_or(((1, false), n.line));
        Some(Check {
            file: Some(FileSpec {
                path: (path, path_line),
                weight: (w, reverse, weight_line),
                init_file: tf.init_file,
            }),
            ..Check::new(CheckKind::File, n.line, "FILE_CHECK")
        })
    }

    /// A checker block.
    fn check(&mut self, n: &Node) -> Option<Check> {
        let (kind, keyword, known): (CheckKind, &'static str, Vec<&'static str>) = match n.keyword()
        {
            "TCP_CHECK" => (CheckKind::Tcp, "TCP_CHECK", CHECK_KEYWORDS.to_vec()),
            "HTTP_GET" => (
                CheckKind::Http,
                "HTTP_GET",
                [CHECK_KEYWORDS, HTTP_KEYWORDS].concat(),
            ),
            "SSL_GET" => (
                CheckKind::Http,
                "SSL_GET",
                [CHECK_KEYWORDS, HTTP_KEYWORDS].concat(),
            ),
            "UDP_CHECK" => (
                CheckKind::Udp,
                "UDP_CHECK",
                [CHECK_KEYWORDS, UDP_KEYWORDS].concat(),
            ),
            "DNS_CHECK" => (
                CheckKind::Dns,
                "DNS_CHECK",
                [CHECK_KEYWORDS, DNS_KEYWORDS].concat(),
            ),
            "PING_CHECK" => (CheckKind::Ping, "PING_CHECK", CHECK_KEYWORDS.to_vec()),
            "SMTP_CHECK" => (
                CheckKind::Smtp,
                "SMTP_CHECK",
                [CHECK_KEYWORDS, SMTP_KEYWORDS].concat(),
            ),
            _ => (CheckKind::Misc, "MISC_CHECK", MISC_KEYWORDS.to_vec()),
        };
        self.extra_words(n, 1);
        let mut ck = Check::new(kind, n.line, keyword);
        let mut unknown = Vec::new();
        for c in n.children() {
            self.check_keyword(&mut ck, c, &known, &mut unknown);
        }
        let timing = ck.timing.clone();
        self.report_unknown(unknown, |k| check_stays(kind, &timing, k));
        match kind {
            CheckKind::Http if ck.urls.is_empty() => {
                self.warn(
                    n.line,
                    format!(
                        "{keyword} has no url with a path, so keepalived drops this checker: \
                         not converted"
                    ),
                );
                None
            }
            CheckKind::Misc if ck.misc_path.is_none() => {
                self.warn(
                    n.line,
                    "MISC_CHECK has no misc_path: not converted (without another checker the \
                     real is always up)",
                );
                None
            }
            _ => Some(ck),
        }
    }

    fn check_keyword(
        &mut self,
        ck: &mut Check,
        c: &Node,
        known: &[&'static str],
        unknown: &mut Vec<Unknown>,
    ) {
        let l = c.line;
        let misc = ck.kind == CheckKind::Misc;
        match c.keyword() {
            // keepalived knows no nb_get_retry in a TCP_CHECK; see `after_service`.
            "nb_get_retry" if ck.keyword == "TCP_CHECK" => {
                // Parsed only to quote it in the warning; keepalived ignores it.
                let mut ignored = Timing::default();
                self.timing(&mut ignored, c, "stays the real server's");
                if let Some((v, at)) = ignored.retry.filter(|(_, at)| *at == l) {
                    ck.tcp_nb_get_retry = Some((v, at));
                }
            }
            kw if !known.contains(&kw) => unknown.push(self.unknown(c, known)),
            "retry" | "delay_before_retry" if misc => {
                self.not_carried(c, "lb-agent's misc_check is down at the first failing run")
            }
            "connect_timeout" | "retry" | "nb_get_retry" | "delay_before_retry" | "warmup" => {
                self.timing(&mut ck.timing, c, "stays the real server's");
            }
            "connect_ip" => {
                if let Some(a) = self.address(c, "the check connects to the real's address") {
                    ck.connect_ip = Some((a, l));
                }
            }
            "connect_port" | "bind_port" if ck.kind == CheckKind::Ping => {
                self.not_carried(c, "an ICMP echo has no port")
            }
            "connect_port" => {
                if let Some(p) = self.port(c, "the check connects to the real's port") {
                    ck.connect_port = Some((p, l));
                }
            }
            "bindto" => {
                if let Some(a) = self.address(c, "the kernel picks the source address") {
                    ck.bindto = Some((a, l));
                }
            }
            "bind_port" => {
                if let Some(p) = self.port(c, "the kernel picks the source port") {
                    ck.bind_port = Some((p, l));
                }
            }
            "delay_loop" => {
                let stays = "the virtual server's delay_loop applies";
                if let Some(v) = self.seconds(c, 1e-6, stays) {
                    ck.delay_loop = Some((v, l));
                }
            }
            "url" => {
                if let Some(u) = self.url(c) {
                    ck.urls.push(u);
                }
            }
            "misc_path" => {
                if let Some(p) = self.script(c, "the MISC_CHECK has no script") {
                    ck.misc_path = Some((p, l));
                }
            }
            "misc_timeout" => {
                let stays = "misc_timeout stays the delay_loop";
                if let Some(v) = self.uint(c, 0..=u64::from(u32::MAX), stays) {
                    ck.misc_timeout = Some((v, l));
                }
            }
            "payload" => {
                let stays = "the check sends an empty datagram";
                if let Some(v) = self.value(c, stays)
                    && let Some(hex) = self.hex(c, v, stays)
                {
                    ck.payload = Some((hex, l));
                }
            }
            "require_reply" => {
                self.extra_words(c, 2);
                let stays = "no reply is required";
                match c.word(1) {
                    None => ck.require_reply = Some((None, l)),
                    Some(v) => {
                        if let Some(hex) = self.hex(c, v, stays) {
                            ck.require_reply = Some((Some(hex), l));
                        }
                    }
                }
            }
            "type" => {
                let stays = "the query stays of type SOA";
                if let Some(v) = self.value(c, stays) {
                    match DNS_TYPES.iter().find(|t| t.eq_ignore_ascii_case(v)) {
                        Some(t) => ck.dns_type = Some((t, l)),
                        None => self.invalid(c, v, "A, NS, CNAME, SOA, MX, TXT or AAAA", stays),
                    }
                }
            }
            "name" => {
                if let Some(v) = self.value(c, "the query stays for the root, \".\"") {
                    ck.dns_name = Some((v.to_owned(), l));
                }
            }
            "helo_name" => {
                let stays = "HELO names this director's host";
                if let Some(v) = self.value(c, stays) {
                    ck.helo_name = Some((v.to_owned(), l));
                }
            }
            "host" => self.not_carried(
                c,
                "lb-agent's smtp_check checks one address: write its connect_ip and \
                 connect_port in the SMTP_CHECK",
            ),
            "min_reply_length" | "max_reply_length" => self.not_carried(
                c,
                "lb-agent's udp_check checks the start of the reply (require_reply), not its length",
            ),
            "misc_dynamic" => {
                if self.bare_flag(c) {
                    ck.misc_dynamic = Some((true, l));
                }
            }
            "user" => self.not_carried(c, "lb-agent runs scripts as its own user"),
            "alpha" => self.not_carried(
                c,
                "lb-agent's alpha is per virtual server: set alpha there to start every real down",
            ),
            "bind_if" => self.not_carried(c, "the route to the real picks the interface"),
            "fwmark" => self.not_carried(c, "lb-agent does not mark check packets"),
            "log_all_failures" => self.not_carried(c, "lb-agent logs every state change"),
            "virtualhost" => self.virtualhost(&mut ck.virtualhost, c),
            "enable_sni" | "sni_name" | "tls_compliant" if ck.keyword != "SSL_GET" => {
                self.not_carried(c, "HTTP_GET has no TLS; keepalived ignores it there too")
            }
            "enable_sni" => {
                if let Some(b) = self.flag(c, "SNI stays off") {
                    ck.enable_sni = Some((b, l));
                }
            }
            // keepalived's sni_name turns SNI on; without a name, SNI sends the virtualhost.
            "sni_name" => {
                self.no_block(c);
                self.extra_words(c, 2);
                match c.word(1) {
                    Some(name) => ck.sni_name = Some((name.to_owned(), l)),
                    None => ck.enable_sni = Some((true, l)),
                }
            }
            "tls_compliant" => self.not_carried(
                c,
                "lb-agent's ssl_get always ends its connections with close_notify, as \
                 tls_compliant does",
            ),
            _ => self.not_carried(c, "lb-agent's HTTP check sends a plain HTTP/1.0 GET"),
        }
    }

    /// A `url` block; `None` without a path (keepalived drops it).
    fn url(&mut self, n: &Node) -> Option<Url> {
        self.extra_words(n, 1);
        let mut u = Url {
            line: n.line,
            path: None,
            status_code: None,
            digest: None,
            virtualhost: None,
        };
        let mut unknown = Vec::new();
        for c in n.children() {
            match c.keyword() {
                "path" => {
                    if let Some(p) = self.value(c, "the url has no path") {
                        u.path = Some((p.to_owned(), c.line));
                    }
                }
                "status_code" => self.status_code(&mut u, c),
                "digest" => self.digest(&mut u, c),
                "virtualhost" => self.virtualhost(&mut u.virtualhost, c),
                "regex" | "regex_no_match" | "regex_options" | "regex_min_offset"
                | "regex_max_offset" | "regex_stack" => self.not_carried(
                    c,
                    "lb-agent checks the status code and the body's MD5 digest, not regular \
                     expressions",
                ),
                _ => unknown.push(self.unknown(c, URL_KEYWORDS)),
            }
        }
        self.report_unknown(unknown, |_| None);
        if u.path.is_none() {
            self.warn(
                n.line,
                "url has no path, so keepalived ignores it: not converted",
            );
            return None;
        }
        Some(u)
    }

    /// `status_code`: codes and ranges (`200 201 300-399`); a later `status_code` line adds
    /// to the earlier ones, as in keepalived.
    fn status_code(&mut self, u: &mut Url, c: &Node) {
        self.no_block(c);
        let mut codes = Vec::new();
        for w in &c.words[1..] {
            let (lo, hi) = w.split_once('-').unwrap_or((w, w));
            match (lo.parse::<u16>(), hi.parse::<u16>()) {
                (Ok(lo), Ok(hi)) if (100..=599).contains(&lo) && lo <= hi && hi <= 599 => {
                    codes.push((lo, hi));
                }
                _ => self.warn(
                    c.line,
                    format!("status_code {w} is not an HTTP status: ignored as keepalived does"),
                ),
            }
        }
        if codes.is_empty() {
            if c.words.len() == 1 {
                self.warn(
                    c.line,
                    "status_code has no value: ignored as keepalived does",
                );
            }
            return;
        }
        match &mut u.status_code {
            Some((earlier, _)) => earlier.extend(codes),
            None => u.status_code = Some((codes, c.line)),
        }
    }

    /// `digest`: 32 hexadecimal digits; keepalived ignores another length or a non-hex digit,
    /// and keeps the first of two digests.
    fn digest(&mut self, u: &mut Url, c: &Node) {
        let stays = "the body is not checked";
        let Some(v) = self.value(c, stays) else {
            return;
        };
        if let Some((_, first)) = &u.digest {
            self.warn(
                c.line,
                format!(
                    "digest {v}: the url already has the digest of line {first}, which \
                     keepalived keeps: ignored"
                ),
            );
            return;
        }
        if v.len() != 32 || !v.chars().all(|ch| ch.is_ascii_hexdigit()) {
            self.invalid(c, v, "32 hexadecimal digits (an MD5 digest)", stays);
            return;
        }
        u.digest = Some((v.to_ascii_lowercase(), c.line));
    }

    /// A UDP_CHECK's hexadecimal bytes (`payload`, `require_reply`): lowercase, or `None` with
    /// a warning when keepalived would not read them.
    fn hex(&mut self, c: &Node, v: &str, stays: &str) -> Option<String> {
        let valid = !v.is_empty()
            && v.len().is_multiple_of(2)
            && v.len() / 2 <= MAX_UDP_PAYLOAD
            && v.chars().all(|ch| ch.is_ascii_hexdigit());
        if !valid {
            let expected =
                format!("hexadecimal digits, two per byte, at most {MAX_UDP_PAYLOAD} bytes");
            self.invalid(c, v, &expected, stays);
            return None;
        }
        Some(v.to_ascii_lowercase())
    }

    /// `virtualhost` of a virtual server, real server, HTTP_GET or url: the `Host` its HTTP
    /// checks send. A second one replaces the first, as in keepalived.
    fn virtualhost(&mut self, slot: &mut At<String>, c: &Node) {
        let stays = "the Host header comes from the enclosing block, else is the address checked";
        let Some(v) = self.value(c, stays) else {
            return;
        };
        if let Some((old, line)) = slot.take() {
            self.warn(
                c.line,
                format!(
                    "{}: replaces the virtualhost {old} of line {line}, as keepalived does",
                    c.raw
                ),
            );
        }
        *slot = Some((v.to_owned(), c.line));
    }
}

/// What a service's granularity stays when keepalived ignores a `persistence_granularity`.
fn granularity_stays(vip: IpAddr) -> &'static str {
    match vip {
        IpAddr::V4(_) => "persistence_granularity stays 255.255.255.255",
        IpAddr::V6(_) => "persistence_granularity stays 128",
    }
}

/// `value`, else `default`, for messages.
fn current(v: &At<String>, default: &str) -> String {
    v.as_ref()
        .map_or_else(|| default.to_owned(), |(s, _)| s.clone())
}

/// What a virtual server's `keyword` ended up as, for an unknown keyword that meant it.
fn service_stays(s: &Service, keyword: &str) -> Option<String> {
    let set = |line: usize, what: String| format!("{what} is set on line {line}");
    Some(match keyword {
        "protocol" => match &s.protocol {
            Some((p, l)) => set(*l, format!("protocol {}", p.to_uppercase())),
            None => "protocol stays TCP".to_owned(),
        },
        "lb_algo" | "lvs_sched" => match &s.lb_algo {
            Some((a, l)) => set(*l, format!("lb_algo {a}")),
            None => "lb_algo stays wlc".to_owned(),
        },
        "lb_kind" | "lvs_method" => match &s.lb_kind {
            Some((k, l)) => set(*l, format!("lb_kind {k}")),
            None => "lb_kind stays NAT".to_owned(),
        },
        "delay_loop" => match s.delay_loop {
            Some((d, l)) => set(l, format!("delay_loop {}", number(d))),
            None => "delay_loop stays 60".to_owned(),
        },
        "persistence_timeout" => match s.persistence_timeout {
            Some((p, l)) => set(l, format!("persistence_timeout {p}")),
            None => "persistence stays off".to_owned(),
        },
        "persistence_granularity" => granularity_stays(s.vip).to_owned(),
        "quorum" => "quorum stays 1".to_owned(),
        "hysteresis" => "hysteresis stays 0".to_owned(),
        "alpha" | "omega" | "inhibit_on_failure" | "ha_suspend" => format!("{keyword} stays off"),
        "sorry_server" => "there is no sorry server".to_owned(),
        "warmup" => "warmup stays 0".to_owned(),
        _ => return None,
    })
}

/// What a real server's `keyword` ended up as, for an unknown keyword that meant it.
fn real_stays(r: &Real, keyword: &str) -> Option<String> {
    Some(match keyword {
        "weight" => match r.weight {
            Some((w, l)) => format!("weight {w} is set on line {l}"),
            None => "weight stays 1".to_owned(),
        },
        "inhibit_on_failure" => "inhibit_on_failure stays the virtual server's".to_owned(),
        "notify_up" => "no script runs when the real comes up".to_owned(),
        "notify_down" => "no script runs when the real goes down".to_owned(),
        _ => return None,
    })
}

/// What a checker's `keyword` ended up as, for an unknown keyword that meant it.
fn check_stays(kind: CheckKind, t: &Timing, keyword: &str) -> Option<String> {
    Some(match keyword {
        "connect_timeout" => match t.connect_timeout {
            Some((v, l)) => format!("connect_timeout {} is set on line {l}", number(v)),
            None => format!("connect_timeout stays {DEFAULT_CONNECT_TIMEOUT}"),
        },
        "retry" | "nb_get_retry" => match t.retry {
            Some((v, l)) => format!("retry {v} is set on line {l}"),
            None => "retry stays 1".to_owned(),
        },
        "delay_before_retry" => match (t.delay_before_retry, kind) {
            (Some((v, l)), _) => format!("delay_before_retry {} is set on line {l}", number(v)),
            (None, CheckKind::Http) => "delay_before_retry stays 3".to_owned(),
            (None, _) => "delay_before_retry stays 1".to_owned(),
        },
        "connect_port" => "the check connects to the real server's port".to_owned(),
        "connect_ip" => "the check connects to the real server's address".to_owned(),
        _ => return None,
    })
}

/// DNS_CHECK's query types (keepalived's, upper case).
const DNS_TYPES: [&str; 7] = ["A", "NS", "CNAME", "SOA", "MX", "TXT", "AAAA"];

/// The keyword of `known` that `word` probably meant: the same but for case, or at most two
/// edits away (one for short words).
pub(super) fn suggest(word: &str, known: &[&'static str]) -> Option<&'static str> {
    if let Some(k) = known.iter().find(|k| k.eq_ignore_ascii_case(word)) {
        return Some(k);
    }
    let limit = if word.chars().count() <= 4 { 1 } else { 2 };
    known
        .iter()
        .map(|k| {
            (
                edit_distance(&word.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                *k,
            )
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Edits (insert, delete, substitute, swap two neighbours) from `a` to `b`.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

//! `ssl_get` against a real TLS server: `openssl s_server -WWW` serving a page, with
//! certificates `openssl` makes for each test (two authorities, a server certificate from
//! each, a client certificate).

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Stdio,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    net::TcpListener,
    process::{Child, Command},
};

use super::*;
use crate::{
    config::{Config, StatusCodes, TlsClientFiles},
    health::{
        Outcome, Probe,
        probe::{HttpUrl, host_header, http, https},
    },
};

const OPENSSL: &str = "/usr/bin/openssl";
const LIMIT: Duration = Duration::from_secs(5);
/// The page the server serves, and its MD5.
const PAGE: &[u8] = b"hello\n";
const PAGE_MD5: [u8; 16] = [
    0xb1, 0x94, 0x6a, 0xc9, 0x24, 0x92, 0xd2, 0x34, 0x7c, 0x62, 0x35, 0xb4, 0xd2, 0x61, 0x11, 0x84,
];

static DIRS: AtomicU32 = AtomicU32::new(0);

/// A directory of certificates and keys, and the page; removed on drop.
///
/// - `ca.pem`: the authority of `server.pem` (www.example.org and 127.0.0.1) and `client.pem`;
/// - `ca2.pem`: the authority of `sni.pem` (sni.example.org), which the server shows to a
///   client that sends that name with SNI.
struct Pki(PathBuf);

impl Pki {
    fn new() -> Self {
        let n = DIRS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("lb-tls-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Self(dir);
        pki.authority("ca", "lb test CA");
        pki.authority("ca2", "lb test CA 2");
        pki.leaf(
            "server",
            "ca",
            "www.example.org",
            "subjectAltName=DNS:www.example.org,IP:127.0.0.1\nextendedKeyUsage=serverAuth",
        );
        pki.leaf(
            "sni",
            "ca2",
            "sni.example.org",
            "subjectAltName=DNS:sni.example.org\nextendedKeyUsage=serverAuth",
        );
        pki.leaf(
            "client",
            "ca",
            "lb-agent",
            "subjectAltName=DNS:lb-agent.example.org\nextendedKeyUsage=clientAuth",
        );
        std::fs::write(pki.path("page.html"), PAGE).unwrap();
        pki
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    fn openssl(&self, args: &[&str]) {
        let out = std::process::Command::new(OPENSSL)
            .args(args)
            .current_dir(&self.0)
            .output()
            .expect("running /usr/bin/openssl (Debian package openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A self-signed authority, `name.pem` and `name.key`.
    fn authority(&self, name: &str, cn: &str) {
        let (key, pem, subject) = (
            format!("{name}.key"),
            format!("{name}.pem"),
            format!("/CN={cn}"),
        );
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &subject,
        ]);
    }

    /// A certificate `name.pem` with key `name.key`, signed by `ca`, with `extensions`.
    fn leaf(&self, name: &str, ca: &str, cn: &str, extensions: &str) {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        let subject = format!("/CN={cn}");
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subject,
        ]);
        let extensions = format!("basicConstraints=CA:FALSE\n{extensions}\n");
        std::fs::write(self.path(&ext), extensions).unwrap();
        let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }

    /// `openssl s_server -WWW` on a free loopback port, serving this directory with
    /// `server.pem`, `sni.pem` for SNI sni.example.org, and `extra` arguments; killed on drop.
    async fn server(&self, extra: &[&str]) -> (Child, SocketAddr) {
        let addr = {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
            l.local_addr().unwrap()
        };
        let accept = addr.to_string();
        let mut child = Command::new(OPENSSL)
            .args([
                "s_server",
                "-accept",
                &accept,
                "-cert",
                "server.pem",
                "-key",
                "server.key",
                "-servername",
                "sni.example.org",
                "-cert2",
                "sni.pem",
                "-key2",
                "sni.key",
                "-WWW",
            ])
            .args(extra)
            .current_dir(&self.0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("running /usr/bin/openssl s_server");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line == "ACCEPT" {
                    return;
                }
            }
            panic!("s_server ended before it accepted");
        };
        tokio::time::timeout(Duration::from_secs(10), ready)
            .await
            .expect("s_server listening within 10 s");
        // The rest of its output is not read: keep the pipe open so it never blocks or dies.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        (child, addr)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `GET /page.html` with `Host` `host`, expecting `status` and, if given, `digest`.
fn page(host: &str, status: StatusCodes, digest: Option<[u8; 16]>) -> HttpUrl {
    HttpUrl {
        path: "/page.html".into(),
        host: host.into(),
        status,
        digest,
    }
}

fn client(check: TlsCheck) -> TlsClient {
    TlsClient::new(&check, "ssl_get.tls").unwrap()
}

fn ok(detail: &str) -> Outcome {
    Outcome {
        ok: true,
        detail: detail.into(),
    }
}

/// Asserts a failed outcome whose detail holds every one of `fragments`.
#[track_caller]
fn assert_down(outcome: Outcome, fragments: &[&str]) {
    assert!(
        !outcome.ok && fragments.iter().all(|f| outcome.detail.contains(f)),
        "expected down with {fragments:?}, got {outcome:?}"
    );
}

#[tokio::test]
async fn keepalived_defaults_check_status_and_digest_over_tls_whoever_signed() {
    let pki = Pki::new();
    let (_server, addr) = pki.server(&[]).await;
    // keepalived's SSL_GET: no SNI, any certificate (nobody here trusts ca.pem).
    let tls = client(TlsCheck::default());
    let host = host_header(addr);
    let right = page(&host, StatusCodes::one(200), Some(PAGE_MD5));
    assert_eq!(
        https(addr, None, &right, None, &tls, LIMIT).await,
        ok("HTTP 200")
    );
    let wrong_digest = page(&host, StatusCodes::one(200), Some([0; 16]));
    assert_down(
        https(addr, None, &wrong_digest, None, &tls, LIMIT).await,
        &["HTTP 200, body MD5 b1946ac92492d2347c6235b4d2611184 is not the digest 0000"],
    );
    let wrong_status = page(&host, StatusCodes::one(204), None);
    assert_eq!(
        https(addr, None, &wrong_status, None, &tls, LIMIT).await,
        Outcome {
            ok: false,
            detail: "HTTP 200, expected 204".into()
        }
    );
    // The probe of an ssl_get, as the scheduler runs it, and its name in listings.
    let probe = Probe::Http {
        target: addr,
        bind: None,
        urls: vec![right.clone()],
        auth: None,
        vip: None,
        tls: Some(tls),
    };
    assert_eq!(probe.kind(), "ssl_get");
    assert_eq!(
        probe
            .run(LIMIT, &crate::health::ProbeContext::default())
            .await,
        ok("HTTP 200")
    );
    // Plain HTTP to the TLS port gets no HTTP answer: the TLS above was real.
    assert!(!http(addr, None, &right, None, LIMIT).await.ok);
}

#[tokio::test]
async fn verify_checks_the_authority_and_the_name() {
    let pki = Pki::new();
    let (_server, addr) = pki.server(&[]).await;
    let verify = |ca: &str| {
        client(TlsCheck {
            verify: true,
            ca_file: Some(pki.path(ca)),
            ..TlsCheck::default()
        })
    };
    let any = StatusCodes::any_2xx();
    // Another authority than the server's: the handshake fails, the real is down.
    assert_down(
        https(
            addr,
            None,
            &page(&host_header(addr), any.clone(), None),
            None,
            &verify("ca2.pem"),
            LIMIT,
        )
        .await,
        &["TLS handshake", "UnknownIssuer"],
    );
    // Its own: up, by its address (the certificate names 127.0.0.1) or by its name.
    let trusted = verify("ca.pem");
    for host in [
        host_header(addr),
        "www.example.org".into(),
        "www.example.org:443".into(),
    ] {
        let url = page(&host, any.clone(), Some(PAGE_MD5));
        assert_eq!(
            https(addr, None, &url, None, &trusted, LIMIT).await,
            ok("HTTP 200"),
            "{host}"
        );
    }
    // A name the certificate does not carry.
    assert_down(
        https(
            addr,
            None,
            &page("other.example.org", any, None),
            None,
            &trusted,
            LIMIT,
        )
        .await,
        &["TLS handshake", "not valid for name \"other.example.org\""],
    );
}

#[tokio::test]
async fn enable_sni_sends_the_virtualhost_or_sni_name() {
    let pki = Pki::new();
    // The server shows sni.pem (of ca2) only to a client that sends sni.example.org.
    let (_server, addr) = pki.server(&[]).await;
    let check = |enable_sni: bool, sni_name: Option<&str>| {
        client(TlsCheck {
            enable_sni,
            sni_name: sni_name.map(str::to_owned),
            verify: true,
            ca_file: Some(pki.path("ca2.pem")),
            client: None,
        })
    };
    let sni_host = page("sni.example.org", StatusCodes::one(200), Some(PAGE_MD5));
    assert_eq!(
        https(addr, None, &sni_host, None, &check(true, None), LIMIT).await,
        ok("HTTP 200")
    );
    // Without enable_sni, keepalived's default, no name is sent: the server shows its
    // default certificate, which ca2 did not sign.
    assert_down(
        https(addr, None, &sni_host, None, &check(false, None), LIMIT).await,
        &["TLS handshake", "UnknownIssuer"],
    );
    // sni_name over the Host header.
    let www = page("www.example.org", StatusCodes::one(200), None);
    assert_eq!(
        https(
            addr,
            None,
            &www,
            None,
            &check(true, Some("sni.example.org")),
            LIMIT
        )
        .await,
        ok("HTTP 200")
    );
}

#[tokio::test]
async fn the_client_certificate_goes_to_a_server_that_requires_one() {
    let pki = Pki::new();
    let (_server, addr) = pki.server(&["-Verify", "1", "-CAfile", "ca.pem"]).await;
    let url = page(&host_header(addr), StatusCodes::one(200), Some(PAGE_MD5));
    let anonymous = client(TlsCheck::default());
    // TLS 1.3: the server says so after the handshake, with an alert.
    assert_down(
        https(addr, None, &url, None, &anonymous, LIMIT).await,
        &["TLS", "received fatal alert"],
    );
    let with_certificate = client(TlsCheck {
        client: Some(TlsClientFiles {
            certificate_file: pki.path("client.pem"),
            key_file: pki.path("client.key"),
        }),
        ..TlsCheck::default()
    });
    assert_eq!(
        https(addr, None, &url, None, &with_certificate, LIMIT).await,
        ok("HTTP 200")
    );
}

/// The CheckFileError of a configuration whose only real has `ssl_get: { url: ..., tls }`.
fn tls_error(tls: &str) -> CheckFileError {
    let yaml = format!(
        "interface: eth0\nvirtual_servers:\n  - vip: 192.168.0.10\n    port: 443\n    \
         lb_kind: dr\n    real_servers:\n      - ip: 192.168.0.2\n        ssl_get: {{ url: \
         {{ path: / }}, tls: {tls} }}\n"
    );
    let config = Config::from_yaml(&yaml, Path::new("ssl.yaml")).unwrap();
    crate::health::check_specs(&config).unwrap_err()
}

#[test]
fn files_that_cannot_be_used_name_their_field_at_start_and_reload() {
    let pki = Pki::new();
    let at = "virtual_servers[0].real_servers[0].ssl_get.tls";
    let p = |f: &str| pki.path(f).display().to_string();
    let cases = [
        (
            format!("{{ verify: true, ca_file: {} }}", p("missing.pem")),
            "ca_file",
            "No such file",
        ),
        (
            format!("{{ verify: true, ca_file: {} }}", p("page.html")),
            "ca_file",
            "holds no PEM certificate",
        ),
        (
            format!(
                "{{ certificate_file: {}, key_file: {} }}",
                p("client.key"),
                p("client.key")
            ),
            "certificate_file",
            "holds no PEM certificate",
        ),
        (
            format!(
                "{{ certificate_file: {}, key_file: {} }}",
                p("client.pem"),
                p("client.pem")
            ),
            "key_file",
            "holds no unencrypted PEM private key",
        ),
        (
            format!(
                "{{ certificate_file: {}, key_file: {} }}",
                p("client.pem"),
                p("server.key")
            ),
            "key_file",
            "cannot be used with certificate_file",
        ),
    ];
    for (tls, key, fragment) in cases {
        let e = tls_error(&tls);
        assert_eq!(e.field, format!("{at}.{key}"), "{tls}: {e}");
        assert!(e.to_string().contains(fragment), "{tls}: {e}");
    }
    // And files that can be used build the client.
    let yaml = format!(
        "interface: eth0\nvirtual_servers:\n  - vip: 192.168.0.10\n    port: 443\n    \
         lb_kind: dr\n    real_servers:\n      - ip: 192.168.0.2\n        ssl_get: {{ url: \
         {{ path: / }}, tls: {{ verify: true, ca_file: {}, certificate_file: {}, key_file: {} \
         }} }}\n",
        p("ca.pem"),
        p("client.pem"),
        p("client.key")
    );
    let config = Config::from_yaml(&yaml, Path::new("ssl.yaml")).unwrap();
    let specs = crate::health::check_specs(&config).unwrap();
    assert_eq!(specs[0].probe.kind(), "ssl_get");
}

#[test]
fn the_server_name_is_sni_name_else_the_host_else_the_address() {
    let target: SocketAddr = "192.0.2.7:443".parse().unwrap();
    let plain = client(TlsCheck::default());
    let dns = |n: &str| ServerName::try_from(n.to_owned()).unwrap();
    let ip = |a: &str| ServerName::IpAddress(a.parse::<IpAddr>().unwrap().into());
    assert_eq!(
        plain.server_name("www.example.org", target),
        dns("www.example.org")
    );
    assert_eq!(
        plain.server_name("www.example.org:8443", target),
        dns("www.example.org")
    );
    assert_eq!(plain.server_name("192.0.2.7:443", target), ip("192.0.2.7"));
    assert_eq!(plain.server_name("2001:db8::1", target), ip("2001:db8::1"));
    assert_eq!(
        plain.server_name("[2001:db8::1]:443", target),
        ip("2001:db8::1")
    );
    assert_eq!(plain.server_name("bad_name!", target), ip("192.0.2.7"));
    let named = client(TlsCheck {
        enable_sni: true,
        sni_name: Some("api.example.org".into()),
        ..TlsCheck::default()
    });
    assert_eq!(
        named.server_name("www.example.org", target),
        dns("api.example.org")
    );
    // verify without authorities fails closed, whoever built the settings.
    let unverifiable = TlsCheck {
        verify: true,
        ..TlsCheck::default()
    };
    let e = TlsClient::new(&unverifiable, "ssl_get.tls").unwrap_err();
    assert_eq!(e.field, "ssl_get.tls.ca_file");
    // Equal when built from the same settings and files, whatever the client objects.
    assert_eq!(plain, client(TlsCheck::default()));
    assert_ne!(plain, named);
}

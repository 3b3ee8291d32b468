//! Names for addresses and ports, as ipvsadm shows them without `-n`: host names by reverse
//! lookup (getnameinfo), port names from `/etc/services`.

use std::{cell::RefCell, collections::HashMap, ffi::CStr, net::IpAddr, path::Path};

use crate::model::Protocol;

/// Turns addresses and ports into names; `None` means "print the number".
pub trait Resolver {
    /// Host name of an address.
    fn host(&self, addr: IpAddr) -> Option<String>;
    /// Service name of a port (`5672/tcp` -> `amqp`).
    fn service(&self, port: u16, proto: Protocol) -> Option<String>;
}

/// Resolves nothing: every address and port prints as a number (`-n`).
#[derive(Clone, Copy, Debug, Default)]
pub struct NumericResolver;

impl Resolver for NumericResolver {
    fn host(&self, _addr: IpAddr) -> Option<String> {
        None
    }

    fn service(&self, _port: u16, _proto: Protocol) -> Option<String> {
        None
    }
}

/// The system's names: reverse DNS (or `/etc/hosts`) through getnameinfo, ports from
/// `/etc/services`. Each address is looked up once per resolver.
#[derive(Debug)]
pub struct SystemResolver {
    services: Services,
    hosts: RefCell<HashMap<IpAddr, Option<String>>>,
}

impl SystemResolver {
    /// Reads `/etc/services` (a missing file just means numeric ports).
    pub fn new() -> Self {
        SystemResolver {
            services: Services::load(Path::new("/etc/services")),
            hosts: RefCell::default(),
        }
    }
}

impl Default for SystemResolver {
    fn default() -> Self {
        Self::new()
    }
}

impl Resolver for SystemResolver {
    fn host(&self, addr: IpAddr) -> Option<String> {
        self.hosts
            .borrow_mut()
            .entry(addr)
            .or_insert_with(|| reverse_lookup(addr))
            .clone()
    }

    fn service(&self, port: u16, proto: Protocol) -> Option<String> {
        self.services.name(port, proto).map(str::to_owned)
    }
}

/// Name of an address by getnameinfo with `NI_NAMEREQD`; `None` when it has none.
fn reverse_lookup(addr: IpAddr) -> Option<String> {
    // SAFETY: all-zero bytes are a valid value of these plain C structs.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        IpAddr::V4(a) => {
            let sin = (&raw mut storage).cast::<libc::sockaddr_in>();
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            unsafe {
                (*sin).sin_family = libc::AF_INET as libc::sa_family_t;
                (*sin).sin_addr.s_addr = u32::from_ne_bytes(a.octets());
            }
            size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(a) => {
            let sin6 = (&raw mut storage).cast::<libc::sockaddr_in6>();
            // SAFETY: as above.
            unsafe {
                (*sin6).sin6_family = libc::AF_INET6 as libc::sa_family_t;
                (*sin6).sin6_addr.s6_addr = a.octets();
            }
            size_of::<libc::sockaddr_in6>()
        }
    };
    let mut host = [0 as libc::c_char; libc::NI_MAXHOST as usize];
    // SAFETY: the address points to `len` initialized bytes, `host` is writable for its
    // length, and no service buffer is asked for.
    let rc = unsafe {
        libc::getnameinfo(
            (&raw const storage).cast::<libc::sockaddr>(),
            len as libc::socklen_t,
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: on success getnameinfo wrote a NUL-terminated string into `host`.
    let name = unsafe { CStr::from_ptr(host.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// A services database in `/etc/services` format: `name port/proto [aliases...] [# comment]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Services {
    /// (name, aliases, port, protocol), in file order.
    entries: Vec<(String, Vec<String>, u16, Protocol)>,
}

impl Services {
    /// Reads a services file; an unreadable file gives an empty database.
    pub fn load(path: &Path) -> Self {
        std::fs::read_to_string(path)
            .map(|text| Self::parse(&text))
            .unwrap_or_default()
    }

    /// Parses services-file text; lines it does not understand are skipped.
    pub fn parse(text: &str) -> Self {
        let mut entries = Vec::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut words = line.split_whitespace();
            let (Some(name), Some(port_proto)) = (words.next(), words.next()) else {
                continue;
            };
            let Some((port, proto)) = port_proto.split_once('/') else {
                continue;
            };
            let proto = match proto.to_ascii_lowercase().as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => continue,
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let aliases = words.map(str::to_owned).collect();
            entries.push((name.to_owned(), aliases, port, proto));
        }
        Services { entries }
    }

    /// The first name given to `port/proto`, as getservbyport answers.
    pub fn name(&self, port: u16, proto: Protocol) -> Option<&str> {
        self.entries
            .iter()
            .find(|(_, _, p, pr)| *p == port && *pr == proto)
            .map(|(n, ..)| n.as_str())
    }

    /// The port of a service name or alias for `proto`, as getservbyname answers.
    pub fn port(&self, name: &str, proto: Protocol) -> Option<u16> {
        self.entries
            .iter()
            .find(|(n, aliases, _, pr)| {
                *pr == proto && (n == name || aliases.iter().any(|a| a == name))
            })
            .map(|(_, _, p, _)| *p)
    }
}

//! The entries of a virtual server group (`vips:`), as keepalived's `virtual_server_group`
//! expands them: an address, a range ending in the last octet (IPv4, decimal) or the last
//! 16-bit group (IPv6, hexadecimal), a range to a whole end address, or a prefix, each with a
//! port.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The most addresses one entry may stand for.
pub const MAX_ENTRY_ADDRESSES: u128 = 65_536;

/// The addresses and port of one entry: `10.0.0.1:80`, `10.0.0.10-12:80`,
/// `10.0.0.250-10.0.1.3:80`, `10.0.0.0/30:80`, `[2001:db8::10-1f]:443`,
/// `[2001:db8::/126]:443`. `Err` says what is wrong with it.
pub fn entry(text: &str) -> Result<(Vec<IpAddr>, u16), String> {
    let (addrs, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, port) = rest
            .split_once("]:")
            .ok_or_else(|| format!("`{text}`: write an IPv6 entry as [address]:port"))?;
        if !inside.contains(':') {
            return Err(format!("`{text}`: `{inside}` is not an IPv6 address"));
        }
        (inside, port)
    } else {
        let (addrs, port) = text.rsplit_once(':').ok_or_else(|| {
            format!("`{text}` has no port: write address:port (every port of a VIP is not served)")
        })?;
        if addrs.contains(':') {
            return Err(format!("`{text}`: write an IPv6 entry as [address]:port"));
        }
        (addrs, port)
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("`{text}`: the port must be between 1 and 65535"))?;
    let (first, last) = span(addrs).map_err(|why| format!("`{text}`: {why}"))?;
    let count = last - first + 1;
    if count > MAX_ENTRY_ADDRESSES {
        return Err(format!(
            "`{text}` stands for {count} addresses, more than the {MAX_ENTRY_ADDRESSES} one \
             entry may"
        ));
    }
    let v6 = addrs.contains(':');
    let list = (first..=last)
        .map(|n| {
            if v6 {
                IpAddr::V6(Ipv6Addr::from(n))
            } else {
                IpAddr::V4(Ipv4Addr::from(n as u32))
            }
        })
        .collect();
    Ok((list, port))
}

/// The first and last address of `addrs` (without the port), as numbers.
fn span(addrs: &str) -> Result<(u128, u128), String> {
    let v6 = addrs.contains(':');
    let parse = |s: &str| -> Result<u128, String> {
        match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) if !v6 => Ok(u128::from(u32::from(a))),
            Ok(IpAddr::V6(a)) if v6 => Ok(u128::from(a)),
            _ => Err(format!(
                "`{s}` is not an IPv{} address",
                if v6 { 6 } else { 4 }
            )),
        }
    };
    if let Some((base, bits)) = addrs.split_once('/') {
        let first = parse(base)?;
        let width = if v6 { 128 } else { 32 };
        let bits: u32 = bits
            .parse()
            .ok()
            .filter(|b| (1..=width).contains(b))
            .ok_or_else(|| format!("the prefix length must be between 1 and {width}"))?;
        let host = (1u128 << (width - bits)) - 1;
        if first & host != 0 {
            return Err(format!(
                "{base} has bits set past the prefix length /{bits}"
            ));
        }
        return Ok((first, first | host));
    }
    let Some((start, end)) = addrs.split_once('-') else {
        let a = parse(addrs)?;
        return Ok((a, a));
    };
    let first = parse(start)?;
    // A whole end address (keepalived: the end has a `.` for IPv4, a `:` for IPv6)...
    let whole = if v6 {
        end.contains(':')
    } else {
        end.contains('.')
    };
    let last = if whole {
        parse(end)?
    } else {
        // ... or the last octet (decimal) / the last 16-bit group (hexadecimal).
        let (radix, max, low) = if v6 {
            (16, 0xffff, 0xffff)
        } else {
            (10, 255, 0xff)
        };
        let n = u128::from_str_radix(end, radix)
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| format!("the range end `{end}` is not a number up to {max}"))?;
        if n <= first & low {
            return Err(format!(
                "the range end {end} is not greater than the start's last {}",
                if v6 { "group" } else { "octet" }
            ));
        }
        (first & !low) | n
    };
    if last < first {
        return Err("the range ends before it starts".to_owned());
    }
    Ok((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> (Vec<String>, u16) {
        let (addrs, port) = entry(text).unwrap_or_else(|e| panic!("{e}"));
        (addrs.iter().map(IpAddr::to_string).collect(), port)
    }

    #[test]
    fn entries_expand_as_keepalived_expands_them() {
        assert_eq!(ok("10.0.0.1:80"), (vec!["10.0.0.1".into()], 80));
        assert_eq!(
            ok("10.0.0.10-12:80").0,
            ["10.0.0.10", "10.0.0.11", "10.0.0.12"]
        );
        assert_eq!(
            ok("10.0.0.254-10.0.1.1:443").0,
            ["10.0.0.254", "10.0.0.255", "10.0.1.0", "10.0.1.1"]
        );
        assert_eq!(
            ok("10.0.0.4/30:80").0,
            ["10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7"]
        );
        assert_eq!(
            ok("[2001:db8::e-11]:443"),
            (
                vec![
                    "2001:db8::e".into(),
                    "2001:db8::f".into(),
                    "2001:db8::10".into(),
                    "2001:db8::11".into()
                ],
                443
            )
        );
        assert_eq!(ok("[2001:db8::/127]:53").0, ["2001:db8::", "2001:db8::1"]);
        assert_eq!(ok("[2001:db8::1]:80").0, ["2001:db8::1"]);
    }

    #[test]
    fn bad_entries_say_why() {
        for (text, why) in [
            ("10.0.0.1", "has no port"),
            ("10.0.0.1:0", "between 1 and 65535"),
            ("10.0.0.12-10:80", "not greater than the start's last octet"),
            ("10.0.0.1-256:80", "not a number up to 255"),
            ("10.0.1.0-10.0.0.9:80", "ends before it starts"),
            ("10.0.0.1/30:80", "bits set past the prefix length"),
            ("10.0.0.0/8:80", "16777216 addresses"),
            ("2001:db8::1:80", "[address]:port"),
            ("[10.0.0.1]:80", "is not an IPv6 address"),
            ("[2001:db8::1]", "[address]:port"),
            ("10.0.0.1-2001:db8::1:80", "[address]:port"),
            ("10.0.0.1-10.0.0.x:80", "`10.0.0.x` is not an IPv4 address"),
        ] {
            let e = entry(text).expect_err(text);
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}

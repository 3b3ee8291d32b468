//! `smtp_check` (keepalived's SMTP_CHECK): connect, read the greeting (2xx), send
//! `HELO <helo_name>` (250 expected), send `QUIT`, and close with FIN (see [`super::probe`]).
//! The whole exchange is bounded by the timeout.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    time::timeout,
};

use super::{
    machine::Outcome,
    probe::{close_politely, connect, io_reason},
};

/// Longest reply read (RFC 5321 4.5.3.1.5: a reply line is at most 512 bytes; a few lines).
const MAX_REPLY: usize = 8 * 1024;

/// `smtp_check` of `target` (from `bind` if given), greeting it as `helo`.
pub async fn smtp(
    target: SocketAddr,
    bind: Option<SocketAddr>,
    helo: &str,
    limit: Duration,
) -> Outcome {
    let exchange = async {
        let mut stream = connect(target, bind, limit).await?;
        let outcome = dialogue(&mut stream, helo).await;
        // QUIT even after a refusal, so the server ends the session itself.
        let _ = stream.write_all(b"QUIT\r\n").await;
        let _ = read_reply(&mut stream).await;
        close_politely(stream).await;
        outcome
    };
    match timeout(limit, exchange).await {
        Ok(Ok(code)) => Outcome {
            ok: true,
            detail: format!("SMTP {code}"),
        },
        Ok(Err(reason)) => Outcome {
            ok: false,
            detail: reason,
        },
        Err(_) => Outcome {
            ok: false,
            detail: "timeout".into(),
        },
    }
}

/// The greeting and `HELO`; the code of the `HELO` reply when both pass.
async fn dialogue(stream: &mut TcpStream, helo: &str) -> Result<u16, String> {
    let greeting = read_reply(stream).await?;
    if !(200..300).contains(&greeting) {
        return Err(format!("greeting SMTP {greeting}, expected 2xx"));
    }
    stream
        .write_all(format!("HELO {helo}\r\n").as_bytes())
        .await
        .map_err(|e| io_reason(&e))?;
    match read_reply(stream).await? {
        250 => Ok(250),
        code => Err(format!("HELO answered SMTP {code}, expected 250")),
    }
}

/// Reads one reply, its continuation lines (`250-...`) included, and returns its code.
async fn read_reply(stream: &mut TcpStream) -> Result<u16, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(code) = last_line_code(&buf)? {
            return Ok(code);
        }
        if buf.len() > MAX_REPLY {
            return Err(format!("reply longer than {} KiB", MAX_REPLY / 1024));
        }
        let n = stream.read(&mut chunk).await.map_err(|e| io_reason(&e))?;
        if n == 0 {
            return Err("connection closed before a reply".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The code of the reply in `buf` once its last line (`250 ...` or `250`) is complete;
/// `Err` for a line that is not a reply.
fn last_line_code(buf: &[u8]) -> Result<Option<u16>, String> {
    for line in buf.split_inclusive(|&b| b == b'\n') {
        if !line.ends_with(b"\n") {
            break;
        }
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        let code = text
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|c| (200..600).contains(c) || (100..200).contains(c))
            .ok_or_else(|| format!("malformed reply line `{}`", text.escape_debug()))?;
        match text.as_bytes().get(3) {
            None | Some(b' ') => return Ok(Some(code)),
            Some(b'-') => {}
            Some(_) => return Err(format!("malformed reply line `{}`", text.escape_debug())),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use tokio::{
        io::{AsyncBufReadExt as _, BufReader},
        net::TcpListener,
    };

    use super::*;

    const LIMIT: Duration = Duration::from_secs(2);

    /// An SMTP server on 127.0.0.1 for one session: greets with `greeting`, answers `HELO`
    /// with `helo` and `QUIT` with 221, then closes. Returns what it read and whether the
    /// client closed with FIN (EOF) after QUIT.
    async fn server(
        greeting: &'static str,
        helo: &'static str,
    ) -> (SocketAddr, tokio::task::JoinHandle<(Vec<String>, bool)>) {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            w.write_all(greeting.as_bytes()).await.unwrap();
            let mut seen = Vec::new();
            let mut line = String::new();
            while r.read_line(&mut line).await.unwrap_or(0) > 0 {
                let cmd = line.trim_end().to_owned();
                line.clear();
                seen.push(cmd.clone());
                if cmd.starts_with("HELO ") {
                    w.write_all(helo.as_bytes()).await.unwrap();
                } else if cmd == "QUIT" {
                    w.write_all(b"221 bye\r\n").await.unwrap();
                    break;
                }
            }
            // The client closes with FIN: EOF, not a reset.
            let mut rest = Vec::new();
            let fin = matches!(r.read_to_end(&mut rest).await, Ok(0));
            drop(w);
            (seen, fin)
        });
        (addr, task)
    }

    #[tokio::test]
    async fn greeting_and_helo_pass() {
        let (addr, task) = server(
            "220-mail.example ESMTP\r\n220 ready\r\n",
            "250 mail.example\r\n",
        )
        .await;
        let out = smtp(addr, None, "director.example", LIMIT).await;
        assert_eq!(
            out,
            Outcome {
                ok: true,
                detail: "SMTP 250".into()
            }
        );
        let (seen, fin) = task.await.unwrap();
        assert_eq!(seen, ["HELO director.example", "QUIT"]);
        assert!(fin, "the server saw FIN (EOF), not RST");
    }

    #[tokio::test]
    async fn a_refusal_is_down() {
        let (addr, task) = server("554 no service\r\n", "250 ok\r\n").await;
        let out = smtp(addr, None, "d", LIMIT).await;
        assert_eq!(out.detail, "greeting SMTP 554, expected 2xx");
        assert!(!out.ok);
        let (seen, fin) = task.await.unwrap();
        assert_eq!(seen, ["QUIT"]);
        assert!(fin);
        let (addr, _task) = server("220 ready\r\n", "501 syntax\r\n").await;
        let out = smtp(addr, None, "d", LIMIT).await;
        assert_eq!(out.detail, "HELO answered SMTP 501, expected 250");
    }

    #[tokio::test]
    async fn silence_and_garbage_are_down() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        let _hold = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(s);
        });
        let out = smtp(addr, None, "d", Duration::from_millis(300)).await;
        assert_eq!(out.detail, "timeout");
        assert_eq!(
            last_line_code(b"HTTP/1.1 400 Bad\r\n"),
            Err("malformed reply line `HTTP/1.1 400 Bad`".into())
        );
        assert_eq!(last_line_code(b"250-a\r\n250"), Ok(None));
        assert_eq!(last_line_code(b"250-a\r\n250 b\r\n"), Ok(Some(250)));
    }
}

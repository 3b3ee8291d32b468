//! Import of a keepalived.conf: its `virtual_server` blocks become an `lb-agent` configuration.
//!
//! The file is read the way keepalived reads it, so that the result behaves like the services
//! keepalived actually ran, not like the ones the file seems to describe:
//!
//! - words are separated by white space, a `"quoted string"` is one word, and `{` / `}` outside
//!   quotes are block delimiters wherever they are on the line;
//! - `#` and `!` outside double quotes start a comment that runs to the end of the line (`\#`
//!   and `\!` are literal); comments may be in any language;
//! - keywords are case-sensitive; an unknown keyword is ignored, so its value keeps its
//!   default (a misspelled `protocal UDP` leaves the protocol TCP);
//! - a script (`notify_up`, `quorum_down`, `misc_path`, ...) is the first word after the
//!   keyword, split again into arguments with quotes and backslash escapes; later words name
//!   the user and group keepalived runs it as.
//!
//! Everything that is not a service (`global_defs`, `vrrp_instance`, ...) stays keepalived's job
//! and is reported, as is every keyword whose meaning the YAML cannot carry. Two exceptions:
//! the global `SSL` block's client `certificate` and `key`, which every `SSL_GET` (an
//! `ssl_get`) presents; and IPVS's connection sync (`lvs_sync_daemon` in `global_defs`, or the old
//! `lvs_sync_daemon_interface` of a `vrrp_instance`) becomes the `sync:` section, with IPVS's
//! defaults where keepalived has them, lb-agent's own port, and a key file the operator must
//! create (keepalived's sync is not authenticated, lb-agent's is). What lb-agent
//! refuses (NAT, TUN, unserved schedulers, ...) is carried into the YAML as keepalived had it,
//! and reported with the reason `lb-agent --check-config` gives.
//!
//! IPv6 services convert like IPv4 ones; their `persistence_granularity` is a prefix length
//! (1 to 128), as keepalived takes it, and stays one in the YAML.

mod importer;
mod keywords;
mod lexer;
mod parsed;
mod yaml;

#[cfg(test)]
mod tests;

use std::fmt;

use thiserror::Error;

use importer::Importer;
use lexer::parse;
use yaml::{Yaml, comment_text, header, header_is_only_comments, render};

/// Name used for the source in the YAML header when the caller does not give one.
const DEFAULT_SOURCE: &str = "keepalived.conf";

/// A converted keepalived.conf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Import {
    /// The `lb-agent` configuration (YAML, with explanatory comments).
    pub yaml: String,
    /// What was not converted, or not as written, in line order.
    pub warnings: Vec<Warning>,
}

/// Something in keepalived.conf that the YAML does not carry as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// Line of keepalived.conf (1-based).
    pub line: usize,
    /// What happened, and what to do about it.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Input text reaches a terminal and YAML comments through warnings: no control
        // characters.
        write!(f, "line {}: {}", self.line, comment_text(&self.message))
    }
}

/// A keepalived.conf that cannot be converted at all.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ImportError {
    /// A `}` with no open block.
    #[error("line {line}: `}}` closes no block (one `{{` too few, or one `}}` too many)")]
    UnexpectedClose {
        /// Line of the `}`.
        line: usize,
    },
    /// A block that is still open at the end of the file.
    #[error(
        "line {line}: the {keyword} block opened here is never closed: a `}}` is missing in it or \
         after it"
    )]
    Unclosed {
        /// Line of the keyword that opened the outermost unclosed block.
        line: usize,
        /// That keyword.
        keyword: String,
    },
    /// A `{` that follows no keyword.
    #[error("line {line}: `{{` does not follow a keyword")]
    StrayOpen {
        /// Line of the `{`.
        line: usize,
    },
    /// A `"` that is never closed on its line.
    #[error("line {line}: unterminated quote (a `\"` is missing)")]
    UnterminatedQuote {
        /// Line of the quote.
        line: usize,
    },
    /// A keepalived feature the importer cannot follow.
    #[error("line {line}: {what} is not supported by the importer")]
    Unsupported {
        /// Line of the feature.
        line: usize,
        /// What it is.
        what: String,
    },
    /// No interface was given and no `vrrp_instance` names one.
    #[error(
        "no interface given, and no vrrp_instance in the file names one: pass the interface the \
         VIP traffic arrives on"
    )]
    NoInterface,
    /// The interface name is not one Linux accepts.
    #[error("interface: {message}")]
    BadInterface {
        /// Why (as `lb-agent --check-config` says it).
        message: String,
    },
    /// Blocks nested deeper than keepalived's syntax ever needs.
    #[error("line {line}: blocks nested more than {MAX_BLOCK_DEPTH} deep")]
    TooDeep {
        /// Line of the `{` that is one too deep.
        line: usize,
    },
    /// `$NAME` expansion makes the text too large.
    #[error(
        "line {line}: expanding the $parameters makes the configuration larger than \
         {MAX_EXPANDED_BYTES} bytes"
    )]
    ExpansionTooLarge {
        /// Line where the limit was passed.
        line: usize,
    },
    /// The importer wrote YAML that does not read back as written: a bug of the importer,
    /// reported rather than printed.
    #[error("the importer produced YAML that does not read back ({reason}); please report this")]
    Unreadable {
        /// What the YAML reader said.
        reason: String,
    },
}

/// The deepest block nesting read (keepalived's own configurations nest four deep).
pub const MAX_BLOCK_DEPTH: usize = 32;
/// The largest text `$NAME` expansion may make.
pub const MAX_EXPANDED_BYTES: usize = crate::config::MAX_CONFIG_BYTES as usize;

impl ImportError {
    /// The line of keepalived.conf the error is about, if it is about one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ImportError::UnexpectedClose { line }
            | ImportError::Unclosed { line, .. }
            | ImportError::StrayOpen { line }
            | ImportError::UnterminatedQuote { line }
            | ImportError::Unsupported { line, .. }
            | ImportError::TooDeep { line }
            | ImportError::ExpansionTooLarge { line } => Some(*line),
            ImportError::NoInterface
            | ImportError::BadInterface { .. }
            | ImportError::Unreadable { .. } => None,
        }
    }
}

/// Converts keepalived.conf `text` into an `lb-agent` configuration whose XDP program attaches
/// to `interface`. With an empty `interface`, the first `vrrp_instance`'s interface is used
/// (with a warning).
pub fn import(text: &str, interface: &str) -> Result<Import, ImportError> {
    import_named(text, interface, DEFAULT_SOURCE)
}

/// [`import`], naming the source file (`source`) in the YAML header (`lbadm import-keepalived
/// FILE` passes its FILE).
pub fn import_named(text: &str, interface: &str, source: &str) -> Result<Import, ImportError> {
    let (nodes, warnings) = parse(text)?;
    let mut im = Importer {
        warnings,
        ..Importer::default()
    };
    let file = im.file(&nodes);
    let interface = match interface.trim() {
        "" => im.interface_from_vrrp(&file)?,
        name => name.to_owned(),
    };
    let mut body = Yaml::default();
    render(&mut body, &file, &interface);
    im.validate(&body, source)?;
    im.warnings.sort_by_key(|w| w.line);
    let header = header(source, &file, &im.warnings);
    header_is_only_comments(&header)?;
    let yaml = format!("{header}{}", body.out);
    Ok(Import {
        yaml,
        warnings: im.warnings,
    })
}

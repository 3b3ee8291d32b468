//! From configuration to map updates: the desired state built from the configuration and
//! health ([`desired`]), keepalived's quorum over that health ([`quorum`]), operator edits of
//! the configuration ([`edit`]), and the plan of map operations that moves the installed state
//! to the desired one without a dropped flow ([`plan`]). Pure: the agent applies plans through
//! `dataplane`.

pub mod desired;
pub mod edit;
pub mod plan;
pub mod quorum;

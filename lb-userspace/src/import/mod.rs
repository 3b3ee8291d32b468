//! Migration input: configurations of the tools this one replaces, converted into its YAML.
//! Today keepalived's `keepalived.conf` ([`keepalived`]); what the YAML cannot carry is
//! reported, never silently dropped.

pub mod keepalived;

//! End-to-end tests: the real `containerssh` binary, the real OpenSSH client, real Docker
//! containers and the real static-users plugin compiled to WebAssembly.
//!
//! Needs: a Docker engine, and the Debian packages openssh-client, openssh-sftp-server,
//! sshpass and busybox-static (`tests/run.sh` installs them).
mod client;
mod harness;
mod kdc;
mod webhook_server;

mod audit;
mod audit_s3;
mod auth;
mod cli;
mod config_server;
mod conformance;
mod direct_start;
mod docker_options;
mod flow;
mod forwarding;
mod kerberos;
mod kubernetes;
mod lifecycle;
mod log_destinations;
mod logins;
mod oauth2;
mod observe;
mod observe_tls;
mod operator;
mod plugins_any_language;
mod pool;
mod proxy_protocol;
mod remote_docker;
mod remote_forwarding;
mod retries;
mod security;
mod sessions;
mod sshproxy;
mod transfer;
mod webhook;

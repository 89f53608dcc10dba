//! Docker's Engine API, as much of it as dot uses (docs/design.md 17.3):
//! which running containers use a dot's volumes, and stopping, starting
//! and restarting them. Docker's answers are parsed in one place
//! (`parse_containers`) and checked there.

use std::io::{self, BufReader};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::env::ClientEnv;
use crate::serve::http;

/// Where Docker listens when DOCKER_HOST does not say.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// How long a container may take to stop before Docker kills it.
pub const STOP_SECONDS: u32 = 60;
/// The longest container name or ID dot accepts from Docker.
const MAX_NAME: usize = 256;

/// The Engine API on a unix socket.
pub struct Engine {
    socket: PathBuf,
}

/// A running container, with the names of the dot volumes it mounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    /// As Docker shows it: `/postgres`.
    pub name: String,
    pub volumes: Vec<String>,
}

impl Container {
    /// Whether it mounts dot `dot` or one of its subdots.
    pub fn uses(&self, dot: &str) -> bool {
        self.volumes.iter().any(|v| {
            v == dot
                || v.strip_prefix(dot)
                    .is_some_and(|rest| rest.starts_with('.'))
        })
    }
}

impl Engine {
    /// The Engine API `env` names (DOCKER_HOST, `unix://` only), or
    /// Docker's default socket. None when DOCKER_HOST names something
    /// else: dot does not talk to Docker over TCP.
    pub fn from_env(env: &ClientEnv) -> Option<Engine> {
        let socket = match env.get("DOCKER_HOST") {
            None => PathBuf::from(DEFAULT_SOCKET),
            Some(host) => PathBuf::from(host.strip_prefix("unix://")?),
        };
        Some(Engine { socket })
    }

    /// One request; the status and body of the answer.
    fn call(&self, method: &str, path: &str, wait: Duration) -> io::Result<(u16, Vec<u8>)> {
        let mut s = UnixStream::connect(&self.socket)?;
        s.set_read_timeout(Some(wait))?;
        http::write_request(&mut s, method, path, &[("Connection", "close")], b"")?;
        let mut r = BufReader::new(s);
        let head = http::read_response_head(&mut r).map_err(io::Error::other)?;
        let body = http::read_body(&mut r, &head, false).map_err(io::Error::other)?;
        Ok((head.status, body))
    }

    /// A request that changes a container: any 2xx, or 304 (already so).
    fn act(&self, path: &str, wait: Duration) -> io::Result<()> {
        let (status, body) = self.call("POST", path, wait)?;
        if (200..300).contains(&status) || status == 304 {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "Docker answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)]).trim()
        )))
    }

    /// The running containers, with their dot volumes.
    pub fn containers(&self) -> io::Result<Vec<Container>> {
        let (status, body) = self.call("GET", "/containers/json", Duration::from_secs(10))?;
        if status != 200 {
            return Err(io::Error::other(format!("Docker answered {status}")));
        }
        parse_containers(&body).map_err(io::Error::other)
    }

    /// Stops a container (Docker kills it after `STOP_SECONDS`).
    pub fn stop(&self, c: &Container) -> io::Result<()> {
        let wait = Duration::from_secs(u64::from(STOP_SECONDS) + 30);
        self.act(&format!("/containers/{}/stop?t={STOP_SECONDS}", c.id), wait)
    }

    pub fn start(&self, c: &Container) -> io::Result<()> {
        self.act(
            &format!("/containers/{}/start", c.id),
            Duration::from_secs(60),
        )
    }

    pub fn restart(&self, c: &Container) -> io::Result<()> {
        let wait = Duration::from_secs(u64::from(STOP_SECONDS) + 60);
        self.act(
            &format!("/containers/{}/restart?t={STOP_SECONDS}", c.id),
            wait,
        )
    }
}

#[derive(Deserialize)]
struct RawContainer {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Names", default)]
    names: Vec<String>,
    #[serde(rename = "Mounts", default)]
    mounts: Vec<RawMount>,
}

#[derive(Deserialize)]
struct RawMount {
    #[serde(rename = "Type", default)]
    kind: String,
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Driver", default)]
    driver: String,
}

/// Parses `GET /containers/json`: the containers that mount a `dot`
/// volume. An ID goes into request paths, so it must be 1 to 256 ASCII
/// letters and digits; a name is shown, so control characters in it are
/// refused; anything else is an error, never a guess.
pub fn parse_containers(body: &[u8]) -> Result<Vec<Container>, String> {
    let raw: Vec<RawContainer> =
        serde_json::from_slice(body).map_err(|e| format!("Docker's container list: {e}"))?;
    let mut out = Vec::new();
    for c in raw {
        let volumes: Vec<String> = c
            .mounts
            .into_iter()
            .filter(|m| m.kind == "volume" && m.driver == "dot")
            .map(|m| m.name)
            .collect();
        if volumes.is_empty() {
            continue;
        }
        let id_ok = !c.id.is_empty()
            && c.id.len() <= MAX_NAME
            && c.id.bytes().all(|b| b.is_ascii_alphanumeric());
        if !id_ok {
            return Err(format!("Docker's container list has a bad ID {:?}", c.id));
        }
        let name = c
            .names
            .into_iter()
            .next()
            .unwrap_or_else(|| c.id[..12.min(c.id.len())].to_string());
        if name.len() > MAX_NAME || name.chars().any(char::is_control) {
            return Err(format!("Docker's container list has a bad name {name:?}"));
        }
        if let Some(v) = volumes
            .iter()
            .find(|v| v.len() > MAX_NAME || v.chars().any(char::is_control))
        {
            return Err(format!(
                "Docker's container list has a bad volume name {v:?}"
            ));
        }
        out.push(Container {
            id: c.id,
            name,
            volumes,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn containers_with_dot_volumes_are_found() {
        let body = br#"[
            {"Id":"abc123","Names":["/postgres"],"State":"running",
             "Mounts":[{"Type":"volume","Name":"myapp","Driver":"dot","Destination":"/data"}]},
            {"Id":"def456","Names":["/other"],
             "Mounts":[{"Type":"volume","Name":"myapp","Driver":"local"}]},
            {"Id":"0a1b","Names":["/orders"],
             "Mounts":[{"Type":"volume","Name":"shop.orders","Driver":"dot"},
                       {"Type":"bind","Source":"/x"}]}
        ]"#;
        let cs = parse_containers(body).unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0].name, "/postgres");
        assert!(cs[0].uses("myapp") && !cs[0].uses("my") && !cs[0].uses("myapp2"));
        assert!(cs[1].uses("shop") && !cs[1].uses("shop.orders2"));
    }

    #[test]
    fn what_could_reach_a_request_path_or_a_terminal_is_refused() {
        for id in ["../x", "a/b", "", "a?b"] {
            let body = format!(
                r#"[{{"Id":{id:?},"Mounts":[{{"Type":"volume","Name":"a","Driver":"dot"}}]}}]"#
            );
            assert!(parse_containers(body.as_bytes()).is_err(), "{id}");
        }
        let body = r#"[{"Id":"a1","Names":["/x\u001b[2J"],"Mounts":[{"Type":"volume","Name":"a","Driver":"dot"}]}]"#;
        assert!(parse_containers(body.as_bytes()).is_err());
        assert!(parse_containers(b"{}").is_err());
    }

    #[test]
    fn docker_host_must_be_a_unix_socket() {
        let env = |v: &str| ClientEnv::from_pairs(&[("DOCKER_HOST", v)]);
        assert_eq!(
            Engine::from_env(&env("unix:///tmp/d.sock")).unwrap().socket,
            PathBuf::from("/tmp/d.sock")
        );
        assert!(Engine::from_env(&env("tcp://1.2.3.4:2375")).is_none());
        assert_eq!(
            Engine::from_env(&ClientEnv::default()).unwrap().socket,
            PathBuf::from(DEFAULT_SOCKET)
        );
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_cleanly(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(cs) = parse_containers(&body) {
                for c in cs {
                    prop_assert!(c.id.bytes().all(|b| b.is_ascii_alphanumeric()));
                }
            }
        }
    }
}

//! Docker's volume plugin protocol (docs/design.md 17.2): the one place
//! its requests are parsed and checked, and the shapes of its answers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::repo::names::parse_spec;

/// The most bytes a plugin request's body may take.
pub const MAX_REQUEST: usize = 64 << 10;
/// The most bytes of a mount ID.
const MAX_ID: usize = 128;

/// A volume: a dot, or one of its subdots (`DOT.SUBDOT`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    pub dot: String,
    pub subdot: Option<String>,
}

impl Volume {
    /// The volume's name, as Docker knows it.
    pub fn name(&self) -> String {
        match &self.subdot {
            Some(s) => format!("{}.{s}", self.dot),
            None => self.dot.clone(),
        }
    }
}

/// A request from dockerd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Activate,
    Create(Volume),
    Remove(Volume),
    Mount(Volume, String),
    Unmount(Volume, String),
    Path(Volume),
    Get(Volume),
    List,
    Capabilities,
}

/// The body of a request, with every field any request has.
#[derive(Deserialize, Default)]
struct Body {
    #[serde(rename = "Name")]
    name: Option<String>,
    #[serde(rename = "ID")]
    id: Option<String>,
    #[serde(rename = "Opts")]
    opts: Option<BTreeMap<String, String>>,
}

/// Parses a request from its method, path and body. The error says what
/// is wrong, for the answer's `Err`.
pub fn parse(method: &str, path: &str, body: &[u8]) -> Result<Request, String> {
    if method != "POST" {
        return Err(format!("{method} {path}: the plugin answers only POST"));
    }
    if body.len() > MAX_REQUEST {
        return Err(format!(
            "{path}: a body of {} bytes is more than the {MAX_REQUEST} a request may have",
            body.len()
        ));
    }
    // An empty body (Activate, List, Capabilities) is an empty object;
    // `null` too, which some clients send.
    let b: Body = if body.iter().all(u8::is_ascii_whitespace) {
        Body::default()
    } else {
        serde_json::from_slice::<Option<Body>>(body)
            .map_err(|e| format!("{path}: the body is not a request: {e}"))?
            .unwrap_or_default()
    };
    let volume = || -> Result<Volume, String> {
        let name = b
            .name
            .as_deref()
            .ok_or_else(|| format!("{path}: the request names no volume"))?;
        let (dot, subdot) = parse_spec(name).map_err(|e| {
            format!("{name:?} is not a volume dot can serve: a volume is a dot name or DOT.SUBDOT ({e})")
        })?;
        Ok(Volume { dot, subdot })
    };
    let id = || -> Result<String, String> {
        let id =
            b.id.as_deref()
                .ok_or_else(|| format!("{path}: the request has no ID"))?;
        let fine = !id.is_empty()
            && id.len() <= MAX_ID
            && id
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
        if !fine {
            return Err(format!("{path}: {id:?} is not a mount ID"));
        }
        Ok(id.to_string())
    };
    Ok(match path {
        "/Plugin.Activate" => Request::Activate,
        "/VolumeDriver.Create" => {
            if let Some(key) = b.opts.as_ref().and_then(|o| o.keys().next()) {
                return Err(format!(
                    "dot volumes take no options (-o {key}); a volume is a dot, set up with dot itself"
                ));
            }
            Request::Create(volume()?)
        }
        "/VolumeDriver.Remove" => Request::Remove(volume()?),
        "/VolumeDriver.Mount" => Request::Mount(volume()?, id()?),
        "/VolumeDriver.Unmount" => Request::Unmount(volume()?, id()?),
        "/VolumeDriver.Path" => Request::Path(volume()?),
        "/VolumeDriver.Get" => Request::Get(volume()?),
        "/VolumeDriver.List" => Request::List,
        "/VolumeDriver.Capabilities" => Request::Capabilities,
        _ => return Err(format!("{path}: not a volume plugin request")),
    })
}

/// A volume as Get and List describe it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct VolumeInfo {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(
        rename = "Mountpoint",
        skip_serializing_if = "String::is_empty",
        default
    )]
    pub mountpoint: String,
    #[serde(rename = "Status", skip_serializing_if = "Option::is_none", default)]
    pub status: Option<BTreeMap<String, serde_json::Value>>,
}

/// An answer: `Err` empty on success, with what the request asked for.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Answer {
    #[serde(rename = "Err")]
    pub err: String,
    #[serde(
        rename = "Mountpoint",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub mountpoint: Option<String>,
    #[serde(rename = "Volume", skip_serializing_if = "Option::is_none", default)]
    pub volume: Option<VolumeInfo>,
    #[serde(rename = "Volumes", skip_serializing_if = "Option::is_none", default)]
    pub volumes: Option<Vec<VolumeInfo>>,
    #[serde(
        rename = "Capabilities",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub capabilities: Option<serde_json::Value>,
    #[serde(
        rename = "Implements",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub implements: Option<Vec<String>>,
}

impl Answer {
    pub fn error(why: impl Into<String>) -> Answer {
        Answer {
            err: why.into(),
            ..Answer::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn requests_dockerd_sends_parse() {
        let p = |path: &str, body: &str| parse("POST", path, body.as_bytes());
        assert_eq!(p("/Plugin.Activate", ""), Ok(Request::Activate));
        assert_eq!(p("/VolumeDriver.List", "{}"), Ok(Request::List));
        assert_eq!(
            p("/VolumeDriver.Capabilities", "null"),
            Ok(Request::Capabilities)
        );
        let shop = Volume {
            dot: "shop".into(),
            subdot: Some("orders".into()),
        };
        assert_eq!(
            p(
                "/VolumeDriver.Mount",
                r#"{"Name":"shop.orders","ID":"ab12"}"#
            ),
            Ok(Request::Mount(shop.clone(), "ab12".into()))
        );
        assert_eq!(shop.name(), "shop.orders");
        assert_eq!(
            p("/VolumeDriver.Create", r#"{"Name":"myapp","Opts":{}}"#),
            Ok(Request::Create(Volume {
                dot: "myapp".into(),
                subdot: None
            }))
        );
        // Fields a later Docker adds are ignored.
        assert!(p("/VolumeDriver.Get", r#"{"Name":"a","New":1}"#).is_ok());
    }

    #[test]
    fn what_dot_cannot_serve_is_refused() {
        let p = |path: &str, body: &str| parse("POST", path, body.as_bytes());
        for name in ["../etc", "/x", "a..b", "", "a.b.c", "a.__x/y"] {
            let body = format!(r#"{{"Name":{name:?},"ID":"x"}}"#);
            assert!(p("/VolumeDriver.Mount", &body).is_err(), "{name}");
        }
        for id in ["", "a/b", "a b", &"x".repeat(129)] {
            let body = format!(r#"{{"Name":"a","ID":{id:?}}}"#);
            assert!(p("/VolumeDriver.Unmount", &body).is_err(), "{id}");
        }
        let e = p(
            "/VolumeDriver.Create",
            r#"{"Name":"a","Opts":{"size":"1G"}}"#,
        );
        assert!(e.unwrap_err().contains("-o size"));
        assert!(p("/VolumeDriver.Mount", r#"{"ID":"x"}"#).is_err());
        assert!(p("/VolumeDriver.Frob", "{}").is_err());
        assert!(parse("GET", "/Plugin.Activate", b"").is_err());
        assert!(p("/VolumeDriver.Get", "[1,2]").is_err());
        let big = format!(r#"{{"Name":"a","Pad":"{}"}}"#, "x".repeat(MAX_REQUEST));
        assert!(p("/VolumeDriver.Get", &big).is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_cleanly(
            path in prop::sample::select(vec![
                "/Plugin.Activate", "/VolumeDriver.Create", "/VolumeDriver.Mount",
                "/VolumeDriver.Unmount", "/VolumeDriver.Get", "/x",
            ]),
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            if let Ok(Request::Mount(v, id) | Request::Unmount(v, id)) = parse("POST", path, &body) {
                prop_assert!(parse_spec(&v.name()).is_ok());
                prop_assert!(!id.is_empty() && id.len() <= MAX_ID);
            }
        }

        #[test]
        fn any_name_is_a_volume_only_if_it_is_a_dot_spec(name in ".{0,80}") {
            let body = serde_json::json!({"Name": name, "ID": "i"}).to_string();
            let parsed = parse("POST", "/VolumeDriver.Mount", body.as_bytes());
            prop_assert_eq!(parsed.is_ok(), parse_spec(&name).is_ok());
            if let Ok(Request::Mount(v, _)) = parsed {
                prop_assert_eq!(v.name(), name);
            }
        }
    }
}

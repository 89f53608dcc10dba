//! Dots and their configuration: create, find, list, switch and remove
//! dots and subdots, and the settings of the store and of each dot.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::names::{check_branch, check_dot, check_subdot, parse_spec, DEFAULT_SUBDOT};
use super::{dot_key, journal_key, ref_key, Repo, RepoError, Result, Status};
use crate::chunker::ChunkParams;
use crate::store::{Batch, Space};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubdotConfig {
    /// The working directory.
    pub path: PathBuf,
    /// Whether the directory was the user's before `dot init --path`; dot
    /// never deletes such a directory.
    pub adopted: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DotConfig {
    pub name: String,
    /// The current branch.
    pub head: String,
    pub subdots: BTreeMap<String, SubdotConfig>,
    pub chunking: ChunkParams,
    /// Whether device nodes, setuid and setgid files and `security.*`
    /// attributes from remotes may be created in its working directories.
    #[serde(default)]
    pub allow_special_files: bool,
}

impl DotConfig {
    /// Parses a stored configuration and checks the names and paths in
    /// it: the dot, its current branch, each subdot (a directory name),
    /// absolute working directories, and chunk sizes fastcdc accepts.
    fn decode(key: &str, bytes: &[u8]) -> Result<DotConfig> {
        let bad = |why: String| RepoError::Config(key.to_string(), why);
        let cfg: DotConfig = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        check_dot(&cfg.name).map_err(|e| bad(e.to_string()))?;
        check_branch(&cfg.head).map_err(|e| bad(e.to_string()))?;
        for (sub, s) in &cfg.subdots {
            check_subdot(sub).map_err(|e| bad(e.to_string()))?;
            if !s.path.is_absolute() {
                return Err(bad(format!("{} is not an absolute path", s.path.display())));
            }
        }
        cfg.chunking.validate().map_err(bad)?;
        Ok(cfg)
    }

    /// Subdot names are shown as path prefixes unless the dot has only the
    /// default subdot.
    pub(super) fn display_prefix(&self, subdot: &str) -> String {
        if self.subdots.len() == 1 && subdot == DEFAULT_SUBDOT {
            String::new()
        } else {
            format!("{subdot}/")
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DotSummary {
    pub name: String,
    pub branch: String,
    pub current: bool,
    pub size: u64,
    pub commits: usize,
    pub status: Status,
    /// Whether its working state is a mount.
    pub mounted: bool,
    /// A mount no daemon serves: its size and changes are unknown.
    pub unread: bool,
}

impl Repo {
    pub(crate) fn dot(&self, name: &str) -> Result<DotConfig> {
        check_dot(name)?;
        match self.store.get_kv(Space::Meta, &dot_key(name))? {
            Some(v) => DotConfig::decode(&format!("dot/{name}"), &v),
            None => Err(RepoError::NoSuchDot(name.to_string())),
        }
    }

    pub(super) fn put_dot(batch: &mut Batch, cfg: &DotConfig) {
        batch.put(
            Space::Meta,
            dot_key(&cfg.name),
            serde_json::to_vec(cfg).expect("config serializes"),
        );
    }

    pub(crate) fn current(&self) -> Result<Option<String>> {
        Ok(self
            .store
            .get_kv(Space::Meta, b"current")?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The dot named by `spec` (a `dot` or `dot.subdot`; the subdot is
    /// ignored), or the current dot.
    pub(crate) fn resolve_dot(&self, spec: Option<&str>) -> Result<DotConfig> {
        match spec {
            Some(s) => self.dot(&parse_spec(s)?.0),
            None => match self.current()? {
                Some(name) => self.dot(&name),
                None => Err(RepoError::NoCurrentDot),
            },
        }
    }

    pub(crate) fn dots(&self) -> Result<Vec<DotConfig>> {
        let mut raw = Vec::new();
        self.store.scan_kv(Space::Meta, b"dot/", |k, v| {
            raw.push((String::from_utf8_lossy(k).into_owned(), v.to_vec()));
            Ok(true)
        })?;
        raw.iter().map(|(k, v)| DotConfig::decode(k, v)).collect()
    }

    pub(crate) fn config_get(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .store
            .get_kv(Space::Meta, format!("config/{key}").as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// A setting of one dot: `allowSpecialFiles` (true or false).
    pub(crate) fn dot_config_get(&self, cfg: &DotConfig, key: &str) -> Result<String> {
        match key {
            DOT_SETTING_SPECIAL => Ok(cfg.allow_special_files.to_string()),
            _ => Err(unknown_dot_setting(key)),
        }
    }

    pub(crate) fn dot_config_set(&self, cfg: &DotConfig, key: &str, value: &str) -> Result<()> {
        let mut cfg = cfg.clone();
        match key {
            DOT_SETTING_SPECIAL => {
                cfg.allow_special_files = value.parse().map_err(|_| {
                    RepoError::Usage(format!("{key} is true or false, not {value:?}"))
                })?
            }
            _ => return Err(unknown_dot_setting(key)),
        }
        let mut b = Batch::default();
        Self::put_dot(&mut b, &cfg);
        Ok(self.store.write(b)?)
    }

    pub(crate) fn config_set(&self, key: &str, value: &str) -> Result<()> {
        match key {
            "user.name" | "user.email" => {}
            super::reflog::EXPIRE_SETTING => {
                super::reflog::parse_expire(value).map_err(RepoError::Usage)?;
            }
            super::remote::REMOTE_GRACE_SETTING => {
                super::remote::parse_grace(value).map_err(RepoError::Usage)?;
            }
            _ => {
                return Err(RepoError::Usage(format!(
                    "unknown setting {key:?}; known settings: user.name, user.email, {}, {}",
                    super::reflog::EXPIRE_SETTING,
                    super::remote::REMOTE_GRACE_SETTING
                )))
            }
        }
        let mut b = Batch::default();
        b.put(
            Space::Meta,
            format!("config/{key}").into_bytes(),
            value.as_bytes().to_vec(),
        );
        Ok(self.store.write(b)?)
    }

    /// `dot init NAME[.SUBDOT] [--path DIR]`: creates a dot (or adds a
    /// subdot to an existing one) and makes it current.
    pub(crate) fn init(
        &self,
        spec: &str,
        path: Option<&Path>,
        chunking: Option<ChunkParams>,
    ) -> Result<(String, String)> {
        let (dot, sub) = parse_spec(spec)?;
        let sub = sub.unwrap_or_else(|| DEFAULT_SUBDOT.to_string());
        if let Some(c) = chunking {
            c.validate().map_err(RepoError::Usage)?;
        }
        let mut cfg = match self.dot(&dot) {
            Ok(cfg) => {
                if chunking.is_some_and(|c| c != cfg.chunking) {
                    return Err(RepoError::Usage(format!(
                        "dot {dot} already chunks with min {} avg {} max {}; chunk sizes are fixed when a dot is created",
                        cfg.chunking.min, cfg.chunking.avg, cfg.chunking.max
                    )));
                }
                if cfg.subdots.contains_key(&sub) {
                    return Err(RepoError::Usage(if sub == DEFAULT_SUBDOT {
                        format!("dot {dot} already exists; pick another name, or remove it with dot rm {dot}")
                    } else {
                        format!("subdot {dot}.{sub} already exists")
                    }));
                }
                cfg
            }
            Err(RepoError::NoSuchDot(_)) => DotConfig {
                name: dot.clone(),
                head: "master".into(),
                subdots: BTreeMap::new(),
                chunking: chunking.unwrap_or_default(),
                allow_special_files: false,
            },
            Err(e) => return Err(e),
        };
        let sub_cfg = match path {
            Some(p) => {
                let path = adopt_path(p)?;
                // A volume holding the store would commit the store itself.
                let home =
                    fs::canonicalize(self.home()).unwrap_or_else(|_| self.home().to_path_buf());
                if home.starts_with(&path) || path.starts_with(&home) {
                    return Err(RepoError::Usage(format!(
                        "{} overlaps dot's own store {}; adopt a directory outside it (or set DOT_HOME elsewhere)",
                        path.display(),
                        home.display()
                    )));
                }
                SubdotConfig {
                    path,
                    adopted: true,
                }
            }
            None => {
                let p = self.work_dir(&dot).join(&sub);
                // Debris of an interrupted `dot rm`: the dot is gone, so is its data.
                if p.exists() {
                    fs::remove_dir_all(&p)
                        .map_err(|e| RepoError::io(format!("cannot clear {}", p.display()), e))?;
                }
                fs::create_dir_all(&p)
                    .map_err(|e| RepoError::io(format!("cannot create {}", p.display()), e))?;
                SubdotConfig {
                    path: p,
                    adopted: false,
                }
            }
        };
        if let Some(other) = self
            .dots()?
            .iter()
            .flat_map(|d| d.subdots.iter().map(move |(s, c)| (d, s, c)))
            .find(|(_, _, c)| {
                c.path.starts_with(&sub_cfg.path) || sub_cfg.path.starts_with(&c.path)
            })
        {
            return Err(RepoError::Usage(format!(
                "{} overlaps the working directory of {}.{}; give each subdot a directory of its own",
                sub_cfg.path.display(),
                other.0.name,
                other.1
            )));
        }
        let new_dot = cfg.subdots.is_empty();
        cfg.subdots.insert(sub.clone(), sub_cfg);
        let mut b = Batch::default();
        Self::put_dot(&mut b, &cfg);
        if new_dot {
            b.put(Space::Refs, ref_key(&dot, &cfg.head), Vec::new());
        }
        b.put(Space::Meta, b"current".to_vec(), dot.as_bytes().to_vec());
        self.store.write(b)?;
        Ok((dot, sub))
    }

    /// The working directory of `spec` (`dot` with one subdot, or `dot.subdot`).
    pub(crate) fn path(&self, spec: Option<&str>) -> Result<PathBuf> {
        let (cfg, sub) = match spec {
            Some(s) => {
                let (dot, sub) = parse_spec(s)?;
                (self.dot(&dot)?, sub)
            }
            None => (self.resolve_dot(None)?, None),
        };
        let Some(first) = cfg.subdots.keys().next() else {
            return Err(RepoError::NotFound(format!(
                "dot {} has no subdots: its commit holds none, or its clone has not finished (see dot status)",
                cfg.name
            )));
        };
        let sub = match sub {
            Some(s) => s,
            None if cfg.subdots.contains_key(DEFAULT_SUBDOT) => DEFAULT_SUBDOT.to_string(),
            None if cfg.subdots.len() == 1 => first.clone(),
            None => {
                return Err(RepoError::Usage(format!(
                    "dot {} has subdots {}; name one, as in dot path {}.{first}",
                    cfg.name,
                    cfg.subdots.keys().cloned().collect::<Vec<_>>().join(", "),
                    cfg.name,
                )))
            }
        };
        cfg.subdots
            .get(&sub)
            .map(|s| s.path.clone())
            .ok_or_else(|| {
                RepoError::Usage(format!(
                    "dot {} has no subdot {sub}; see dot list",
                    cfg.name
                ))
            })
    }

    pub(crate) fn switch(&self, name: &str) -> Result<()> {
        let cfg = self.resolve_dot(Some(name))?;
        let mut b = Batch::default();
        b.put(Space::Meta, b"current".to_vec(), cfg.name.into_bytes());
        Ok(self.store.write(b)?)
    }

    /// Deletes a dot: its configuration, branches and cache atomically, then
    /// the working directories dot created. `dot gc` frees its data.
    pub(crate) fn remove(&self, name: &str) -> Result<DotConfig> {
        let (dot, sub) = parse_spec(name)?;
        if let Some(sub) = sub {
            return Err(RepoError::Usage(format!(
                "dot rm removes whole dots; to remove subdot {sub}, remove the dot {dot}"
            )));
        }
        // A damaged configuration must not keep a dot from being removed;
        // only its directories are then left in place.
        let cfg = match self.dot(&dot) {
            Err(RepoError::Config(..)) => None,
            other => Some(other?),
        };
        if self.mounted_dot(&dot)?.is_some() {
            return Err(RepoError::Conflict(format!(
                "dot {dot} is mounted; dot unmount {dot} first"
            )));
        }
        if let Some(m) = self.mounts()?.into_iter().find(|m| m.dot == dot) {
            return Err(RepoError::Conflict(format!(
                "dot {dot} is shown at {}; dot unmount {} first",
                m.at.display(),
                m.at.display()
            )));
        }
        let mut b = Batch::default();
        b.delete(Space::Meta, dot_key(&dot));
        b.delete(Space::Meta, journal_key(&dot));
        b.delete_prefix(Space::Refs, format!("{dot}\0").into_bytes());
        b.delete_prefix(Space::Cache, format!("{dot}\0").into_bytes());
        b.delete_prefix(Space::Meta, format!("upstream/{dot}\0").into_bytes());
        Self::drop_reflog(&mut b, &dot);
        if self.current()?.as_deref() == Some(dot.as_str()) {
            b.delete(Space::Meta, b"current".to_vec());
        }
        self.store.write(b)?;
        let work = self.work_dir(&dot);
        let cfg = cfg.unwrap_or_else(|| DotConfig {
            name: dot.clone(),
            head: "master".into(),
            subdots: BTreeMap::new(),
            chunking: ChunkParams::default(),
            allow_special_files: false,
        });
        // Only directories dot made for the dot, where it makes them.
        for (sub, s) in cfg.subdots.iter().filter(|(_, s)| !s.adopted) {
            if s.path == work.join(sub) {
                let _ = fs::remove_dir_all(&s.path);
            }
        }
        let _ = fs::remove_dir(&work);
        Ok(cfg)
    }

    /// Every dot, with its working state's status from `status`.
    pub(crate) fn list(
        &self,
        status: &dyn Fn(&DotConfig) -> Result<Status>,
    ) -> Result<Vec<DotSummary>> {
        let current = self.current()?;
        let mut out = Vec::new();
        for cfg in self.dots()? {
            let mounted = self.mounted_dot(&cfg.name)?.is_some();
            let (status, unread) = match status(&cfg) {
                Ok(s) => (s, false),
                // A mount no daemon serves cannot be read; it is listed.
                Err(_) if mounted => (Status::default(), true),
                Err(e) => return Err(e),
            };
            out.push(DotSummary {
                mounted,
                current: current.as_deref() == Some(cfg.name.as_str()),
                branch: cfg.head.clone(),
                size: status.size,
                commits: self.log(&cfg)?.len(),
                name: cfg.name,
                status,
                unread,
            });
        }
        Ok(out)
    }
}

/// The per-dot setting that allows special files from remotes.
pub const DOT_SETTING_SPECIAL: &str = "allowSpecialFiles";

fn unknown_dot_setting(key: &str) -> RepoError {
    RepoError::Usage(format!(
        "unknown dot setting {key:?}; the setting of a dot is {DOT_SETTING_SPECIAL}"
    ))
}

/// Checks a directory given to `dot init --path` and makes it absolute.
fn adopt_path(p: &Path) -> Result<PathBuf> {
    let md = fs::metadata(p).map_err(|e| {
        RepoError::Usage(format!(
            "cannot use {} as a working directory: {e}",
            p.display()
        ))
    })?;
    if !md.is_dir() {
        return Err(RepoError::Usage(format!(
            "{} is not a directory; give --path a directory",
            p.display()
        )));
    }
    fs::read_dir(p).map_err(|e| {
        RepoError::Usage(format!(
            "cannot read {}: {e}; fix its permissions",
            p.display()
        ))
    })?;
    let abs = fs::canonicalize(p)
        .map_err(|e| RepoError::Usage(format!("cannot resolve {}: {e}", p.display())))?;
    utf8_path(&abs)?;
    Ok(abs)
}

/// Paths are kept in the dot configuration as text.
pub(super) fn utf8_path(p: &Path) -> Result<()> {
    match p.to_str() {
        Some(_) => Ok(()),
        None => Err(RepoError::Usage(format!(
            "the path {} is not valid UTF-8; use a directory whose path is",
            p.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_dot_config_parses_or_fails_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = DotConfig::decode("dot/x", &bytes);
        }

        #[test]
        fn dot_config_names_are_checked(sub in ".{0,70}", path in "/?[a-z/]{0,10}") {
            let j = serde_json::json!({
                "name": "app", "head": "master",
                "subdots": {sub.clone(): {"path": path.clone(), "adopted": false}},
                "chunking": {"min": 16384, "avg": 65536, "max": 262144},
            });
            let parsed = DotConfig::decode("dot/app", j.to_string().as_bytes());
            let legal = check_subdot(&sub).is_ok() && path.starts_with('/');
            prop_assert_eq!(parsed.is_ok(), legal);
        }
    }
}

//! Names of dots, subdots and branches, and how `dot.subdot` is parsed.

use super::RepoError;

pub const DEFAULT_SUBDOT: &str = "__default__";

use crate::tree::commit::valid_name as valid_segment;

/// A dot name: `[A-Za-z0-9_-]{1,64}` segments joined by `/`.
pub fn check_dot(name: &str) -> Result<(), RepoError> {
    if name.split('/').all(valid_segment) {
        Ok(())
    } else {
        Err(RepoError::Usage(format!(
            "invalid dot name {name:?}: use letters, digits, '_' and '-' (1 to 64 per '/'-separated part)"
        )))
    }
}

pub fn check_subdot(name: &str) -> Result<(), RepoError> {
    if valid_segment(name) {
        Ok(())
    } else {
        Err(RepoError::Usage(format!(
            "invalid subdot name {name:?}: use 1 to 64 letters, digits, '_' and '-'"
        )))
    }
}

/// Branch names follow the dot segment rule, with `/` allowed between
/// segments, and must not look like a ref expression.
pub fn check_branch(name: &str) -> Result<(), RepoError> {
    if name != "HEAD" && name.split('/').all(valid_segment) {
        Ok(())
    } else {
        Err(RepoError::Usage(format!(
            "invalid branch name {name:?}: use letters, digits, '_' and '-' (and '/' between parts), and not HEAD"
        )))
    }
}

pub fn check_remote(name: &str) -> Result<(), RepoError> {
    if valid_segment(name) {
        Ok(())
    } else if name.contains(['/', ':']) {
        Err(RepoError::Usage(format!(
            "{name:?} is a location, and dot takes a remote's name here; add it first with dot remote add NAME {name}"
        )))
    } else {
        Err(RepoError::Usage(format!(
            "invalid remote name {name:?}: use letters, digits, '_' and '-'"
        )))
    }
}

/// Splits `dot.subdot` into its parts; a plain `dot` has no subdot.
pub fn parse_spec(spec: &str) -> Result<(String, Option<String>), RepoError> {
    match spec.split_once('.') {
        Some((dot, sub)) => {
            check_dot(dot)?;
            check_subdot(sub)?;
            Ok((dot.to_string(), Some(sub.to_string())))
        }
        None => {
            check_dot(spec)?;
            Ok((spec.to_string(), None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_dot("frob_mysql").is_ok());
        assert!(check_dot("team/my-app").is_ok());
        for bad in ["", "a b", "a..b", "/a", "a/", &"x".repeat(65), "a.b", "é"] {
            assert!(check_dot(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_spec("myapp.orders-db").unwrap(),
            ("myapp".into(), Some("orders-db".into()))
        );
        assert_eq!(parse_spec("myapp").unwrap(), ("myapp".into(), None));
        assert!(parse_spec("myapp.").is_err());
        assert!(parse_spec("myapp.a.b").is_err());
        assert!(check_branch("HEAD").is_err());
        assert!(check_branch("feature/x").is_ok());
    }
}

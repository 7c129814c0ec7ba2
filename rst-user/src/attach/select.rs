//! Which interfaces to monitor: `-i` names and shell-style globs, or, without `-i`,
//! every non-loopback interface that is up.

use glob::Pattern;

/// The interface selection of `run` and `watch`.
#[derive(Clone, Debug)]
pub struct Selection {
    /// Names without glob characters: must exist at start-up and attach, or rstmon fails.
    exact: Vec<String>,
    patterns: Vec<Pattern>,
    /// No `-i` at all: every non-loopback interface that is up.
    default: bool,
}

/// A `-i` value that is not a valid glob.
#[derive(Debug, thiserror::Error)]
#[error("bad interface pattern `{pattern}`: {error}")]
pub struct BadPattern {
    pattern: String,
    error: glob::PatternError,
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

impl Selection {
    /// From the `-i` values; empty means the default selection.
    pub fn new(args: &[String]) -> Result<Self, BadPattern> {
        let mut exact = Vec::new();
        let mut patterns = Vec::new();
        for a in args {
            if is_glob(a) {
                patterns.push(Pattern::new(a).map_err(|error| BadPattern {
                    pattern: a.clone(),
                    error,
                })?);
            } else if !exact.contains(a) {
                exact.push(a.clone());
            }
        }
        Ok(Self {
            exact,
            patterns,
            default: args.is_empty(),
        })
    }

    /// Selects nothing (tracepoints only).
    pub fn none() -> Self {
        Self {
            exact: vec![],
            patterns: vec![],
            default: false,
        }
    }

    /// The exact names given, which must exist at start-up.
    pub fn exact(&self) -> &[String] {
        &self.exact
    }

    /// Whether an explicitly named interface is this one (its attach failing is fatal at
    /// start-up).
    pub fn is_exact(&self, name: &str) -> bool {
        self.exact.iter().any(|n| n == name)
    }

    /// Whether an interface with these properties is to be monitored.
    pub fn matches(&self, name: &str, up: bool, loopback: bool) -> bool {
        if self.default {
            return up && !loopback;
        }
        self.is_exact(name) || self.patterns.iter().any(|p| p.matches(name))
    }

    /// Whether nothing can ever match (no interfaces to follow).
    pub fn is_empty(&self) -> bool {
        !self.default && self.exact.is_empty() && self.patterns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(args: &[&str]) -> Selection {
        Selection::new(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn default_is_every_up_non_loopback_interface() {
        let s = sel(&[]);
        assert!(s.matches("eth0", true, false));
        assert!(!s.matches("eth0", false, false));
        assert!(!s.matches("lo", true, true));
        assert!(!s.is_empty());
    }

    #[test]
    fn names_and_globs() {
        let s = sel(&["veth*", "eth0", "eth0", "br[0-9]"]);
        assert_eq!(s.exact(), ["eth0"]);
        assert!(s.matches("veth123", false, false));
        assert!(s.matches("eth0", false, false));
        assert!(s.matches("br3", true, false));
        assert!(!s.matches("br10", true, false));
        assert!(!s.matches("eth1", true, false));
        assert!(s.is_exact("eth0") && !s.is_exact("veth1"));
        // An explicit glob may select loopback.
        assert!(sel(&["l?"]).matches("lo", true, true));
    }

    #[test]
    fn bad_pattern_is_an_error() {
        let err = Selection::new(&["veth[".to_string()]).unwrap_err();
        assert!(err.to_string().contains("veth["), "{err}");
        assert!(Selection::none().is_empty());
    }
}

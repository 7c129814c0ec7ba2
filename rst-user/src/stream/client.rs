//! `rstmon watch` reading a running daemon's stream: nothing is loaded or attached, so
//! it works while the daemon holds every XDP hook.

use std::{
    future::Future,
    io::{self, Write as _},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines},
    net::{UnixStream, unix::OwnedReadHalf, unix::OwnedWriteHalf},
};
use tracing::warn;

use super::{Control, Hello, PROTOCOL, Request, filter::FilterSpec};
use crate::present::line;

/// How long the daemon has to answer the request.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// An admitted watcher's connection.
pub struct Session {
    path: PathBuf,
    lines: Lines<BufReader<OwnedReadHalf>>,
    /// Kept open: the daemon takes its closing as the watcher going away.
    _wr: OwnedWriteHalf,
    pub hello: Hello,
}

/// Connects to the daemon at `path` and asks for the samples `filter` passes. `None`
/// when no daemon is there (no socket, or nothing accepts on it); an error when one is
/// there but this watcher cannot use it.
pub async fn connect(path: &Path, filter: &FilterSpec) -> anyhow::Result<Option<Session>> {
    let s = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => bail!(
            "cannot use the daemon's watch socket {}: permission denied (only root and the daemon's user may watch; --standalone runs without the daemon)",
            path.display()
        ),
        Err(e) => bail!("cannot connect to {}: {e}", path.display()),
    };
    let (rd, mut wr) = s.into_split();
    let mut req = serde_json::to_string(&Request {
        watch: PROTOCOL,
        filter: filter.clone(),
    })?;
    req.push('\n');
    // A refusal may close the connection early: its reason is still to be read.
    let sent = wr.write_all(req.as_bytes()).await;
    let mut lines = BufReader::new(rd).lines();
    let first = tokio::time::timeout(HELLO_TIMEOUT, lines.next_line())
        .await
        .map_err(|_| anyhow!("{} did not answer within {HELLO_TIMEOUT:?}", path.display()))?;
    let first = match (first, sent) {
        (Ok(Some(l)), _) => l,
        (_, Err(e)) => bail!("sending the request to {}: {e}", path.display()),
        (Ok(None), Ok(())) => bail!("the daemon at {} closed the connection", path.display()),
        (Err(e), Ok(())) => bail!("reading from {}: {e}", path.display()),
    };
    match serde_json::from_str::<Control>(&first) {
        Ok(Control::Hello(hello)) => Ok(Some(Session {
            path: path.to_path_buf(),
            lines,
            _wr: wr,
            hello,
        })),
        Ok(Control::Error(why)) => bail!("the daemon at {} refused: {why}", path.display()),
        _ => bail!(
            "{} does not speak rstmon's watch protocol: {first:?}",
            path.display()
        ),
    }
}

/// What to do with one line of the stream.
#[derive(Debug, PartialEq)]
pub enum Item {
    /// A sample (its JSON object).
    Sample(Value),
    Dropped(u64),
    /// The daemon ends the stream.
    End(String),
}

/// Reads one line: a sample has `direction`, anything else must be a control line.
pub fn parse(line: &str) -> Result<Item, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}: {line:?}"))?;
    if v.get("direction").is_some() {
        return Ok(Item::Sample(v));
    }
    match serde_json::from_value::<Control>(v) {
        Ok(Control::Dropped(n)) => Ok(Item::Dropped(n)),
        Ok(Control::Error(why)) => Ok(Item::End(why)),
        Ok(Control::Hello(_)) => Err("a second hello".into()),
        Err(e) => Err(format!("unknown line: {e}: {line:?}")),
    }
}

impl Session {
    /// Prints the stream until `shutdown` resolves (Ok) or the daemon ends it (an error).
    /// JSON lines are printed as the daemon sent them, so fields this version does not
    /// know pass through; with `json`, `{"dropped":N}` notices go to stdout too.
    pub async fn run(
        mut self,
        json: bool,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        loop {
            let line = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                l = self.lines.next_line() => l,
            };
            let line = line.with_context(|| format!("reading from {}", self.path.display()))?;
            let Some(line) = line else {
                bail!("the daemon at {} closed the stream", self.path.display());
            };
            let out = match parse(&line) {
                Ok(Item::Sample(v)) => Some(if json { line } else { line::line(&v) }),
                Ok(Item::Dropped(n)) => {
                    warn!(
                        "{n} samples dropped by the daemon for this watcher (it read too slowly)"
                    );
                    json.then_some(line)
                }
                Ok(Item::End(why)) => bail!(
                    "the daemon at {} ended the stream: {why}",
                    self.path.display()
                ),
                Err(e) => {
                    warn!("{}: {e}", self.path.display());
                    None
                }
            };
            if let Some(out) = out {
                // A closed stdout (e.g. `| head`) ends the watch quietly.
                if writeln!(io::stdout().lock(), "{out}").is_err() {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_are_samples_or_control() {
        let s = r#"{"time":"t","direction":"wire","cause":null}"#;
        assert_eq!(
            parse(s),
            Ok(Item::Sample(
                json!({"time":"t","direction":"wire","cause":null})
            ))
        );
        assert_eq!(parse(r#"{"dropped":12}"#), Ok(Item::Dropped(12)));
        assert_eq!(
            parse(r#"{"error":"the daemon is stopping"}"#),
            Ok(Item::End("the daemon is stopping".into()))
        );
        assert!(parse("{").is_err());
        assert!(parse(r#"{"what":1}"#).is_err());
    }
}

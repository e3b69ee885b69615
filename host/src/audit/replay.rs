//! `containerssh audit replay FILE`: plays a session recording (asciicast v2) in the terminal
//! with its timing, or prints a connection's audit log one event per line.
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

/// Replays `path`. `speed` divides the waits; no wait is longer than `max_wait`.
pub fn replay(path: &Path, speed: f64, max_wait: Duration) -> anyhow::Result<()> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut lines = std::io::BufReader::new(file).lines();
    let first = lines.next().context("the file is empty")??;
    let header: Value = serde_json::from_str(&first).context("the first line is not JSON")?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if header.get("version") == Some(&Value::from(2)) {
        let speed = if speed > 0.0 { speed } else { 1.0 };
        let mut last = 0.0f64;
        for (n, line) in lines.enumerate() {
            let line = line?;
            let event: Value =
                serde_json::from_str(&line).with_context(|| format!("line {}: not JSON", n + 2))?;
            let (Some(t), Some(kind), Some(data)) =
                (event[0].as_f64(), event[1].as_str(), event[2].as_str())
            else {
                bail!("line {}: not an asciicast event", n + 2);
            };
            // A damaged file may hold any number here: never panic on it.
            let wait = Duration::try_from_secs_f64(((t - last) / speed).max(0.0))
                .unwrap_or(max_wait)
                .min(max_wait);
            last = t;
            if kind == "o" {
                std::thread::sleep(wait);
                out.write_all(data.as_bytes())?;
                out.flush()?;
            }
        }
    } else if header.get("event").is_some() {
        for line in std::iter::once(Ok(first)).chain(lines) {
            let event: Value = serde_json::from_str(&line?).context("not a JSON line")?;
            writeln!(out, "{}", describe(&event))?;
        }
    } else {
        bail!(
            "{} is neither an asciicast recording nor an audit log",
            path.display()
        );
    }
    Ok(())
}

/// "time event key=value ..." for one audit log line.
fn describe(event: &Value) -> String {
    let mut text = format!(
        "{} {}",
        event["time"].as_str().unwrap_or("?"),
        event["event"].as_str().unwrap_or("?")
    );
    if let Value::Object(map) = event {
        for (k, v) in map {
            if !matches!(k.as_str(), "time" | "event" | "connectionId") {
                text.push_str(&format!(" {k}={v}"));
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_recordings_are_errors_or_played_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.cast");
        let header = r#"{"version": 2, "width": 80, "height": 24}"#;
        // A huge time stamp and a NaN-like one: played with the longest wait, no panic.
        std::fs::write(
            &path,
            format!("{header}\n[1e308, \"o\", \"x\"]\n[-1e308, \"o\", \"y\"]\n"),
        )
        .unwrap();
        replay(&path, 1.0, Duration::from_millis(1)).unwrap();
        std::fs::write(&path, format!("{header}\n[1, \"o\"]\n")).unwrap();
        assert!(replay(&path, 1.0, Duration::from_millis(1)).is_err());
        std::fs::write(&path, "").unwrap();
        assert!(replay(&path, 1.0, Duration::from_millis(1)).is_err());
    }
}

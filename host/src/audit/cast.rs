//! Recordings of terminal sessions in asciicast v2: a header line, then `[seconds, "o", text]`
//! for output, `"i"` for input (if enabled) and `"r"` for resizes. A writer task does the file
//! work so the data path only hands chunks over; a bounded queue applies back-pressure rather
//! than dropping anything when the disk is slower than the session.
use std::borrow::Cow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::log::create_private;

enum Event {
    Output(Instant, Bytes),
    Input(Instant, Bytes),
    Resize(Instant, u32, u32),
}

/// The recording of one terminal session.
pub struct Recording {
    record_input: bool,
    events: mpsc::Sender<Event>,
    writer: JoinHandle<()>,
}

/// Chunks in flight between the session and the writer.
const QUEUE: usize = 256;

impl Recording {
    /// Starts a recording in `path`; a write that fails later sets `failed` (the connection's
    /// audit flag), so the session is ended rather than going on unrecorded. The writer task
    /// is one of `writers` (the connection's end waits for them before uploading).
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        path: &Path,
        columns: u32,
        rows: u32,
        term: &str,
        record_input: bool,
        failed: Arc<AtomicBool>,
        connection_id: &str,
        writers: &tokio_util::task::TaskTracker,
    ) -> anyhow::Result<Self> {
        let header = serde_json::json!({
            "version": 2,
            "width": columns,
            "height": rows,
            "timestamp": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            "env": {"TERM": term},
        });
        // Creating the file and writing the header block: off the async workers.
        let path = path.to_path_buf();
        let create = path.clone();
        let file = tokio::task::spawn_blocking(move || {
            let mut file = create_private(&create)?;
            std::io::Write::write_all(&mut file, format!("{header}\n").as_bytes())?;
            anyhow::Ok(file)
        })
        .await??;
        let started = Instant::now();
        let (events, rx) = mpsc::channel(QUEUE);
        // The writer ends by itself when the recording is finished or dropped (its queue
        // closes), after writing and syncing what was queued.
        let writer = writers.spawn(write_events(
            tokio::fs::File::from_std(file),
            rx,
            started,
            path,
            failed,
            connection_id.to_string(),
        ));
        Ok(Self {
            record_input,
            events,
            writer,
        })
    }

    pub async fn output(&self, data: &Bytes) {
        let _ = self
            .events
            .send(Event::Output(Instant::now(), data.clone()))
            .await;
    }

    /// Writes what is queued and closes the file.
    pub async fn finish(self) {
        drop(self.events);
        let _ = self.writer.await;
    }

    /// A handle for another task of the same session (input or resizes).
    pub fn sender(&self) -> RecordingSender {
        RecordingSender {
            record_input: self.record_input,
            events: self.events.clone(),
        }
    }
}

/// Lets the stdin and control tasks of a session add to its recording.
#[derive(Clone)]
pub struct RecordingSender {
    record_input: bool,
    events: mpsc::Sender<Event>,
}

impl RecordingSender {
    pub async fn input(&self, data: &Bytes) {
        if self.record_input {
            let _ = self
                .events
                .send(Event::Input(Instant::now(), data.clone()))
                .await;
        }
    }

    pub async fn resize(&self, columns: u32, rows: u32) {
        let _ = self
            .events
            .send(Event::Resize(Instant::now(), columns, rows))
            .await;
    }
}

async fn write_events(
    file: tokio::fs::File,
    mut rx: mpsc::Receiver<Event>,
    started: Instant,
    path: std::path::PathBuf,
    audit_failed: Arc<AtomicBool>,
    connection_id: String,
) {
    let mut out = tokio::io::BufWriter::new(file);
    let (mut out_tail, mut in_tail) = (Vec::new(), Vec::new());
    // One line at a time, in a buffer kept across events: the recording costs one escaping
    // pass over the data and no allocation per chunk.
    let mut line = Vec::new();
    let mut failed = false;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // Write everything queued, then flush once.
        while let Some(event) = next {
            match event {
                Event::Output(at, data) => write_line(
                    &mut line,
                    started,
                    at,
                    "o",
                    &utf8_chunk(&mut out_tail, &data),
                ),
                Event::Input(at, data) => write_line(
                    &mut line,
                    started,
                    at,
                    "i",
                    &utf8_chunk(&mut in_tail, &data),
                ),
                Event::Resize(at, c, r) => {
                    write_line(&mut line, started, at, "r", &format!("{c}x{r}"))
                }
            }
            if !failed && out.write_all(&line).await.is_err() {
                failed = true;
                audit_failed.store(true, Ordering::Release);
            }
            next = rx.try_recv().ok();
        }
        if !failed && out.flush().await.is_err() {
            failed = true;
            audit_failed.store(true, Ordering::Release);
        }
    }
    if failed || out.flush().await.is_err() || out.get_ref().sync_data().await.is_err() {
        audit_failed.store(true, Ordering::Release);
        tracing::error!(connection_id = %connection_id, path = %path.display(), "the session recording could not be written completely");
    }
}

/// `[seconds, "kind", "text"]` and a newline, into `line`.
fn write_line(line: &mut Vec<u8>, started: Instant, at: Instant, kind: &str, text: &str) {
    use std::io::Write;
    line.clear();
    let t = at.saturating_duration_since(started).as_secs_f64();
    let _ = write!(line, "[{t:.6}, \"{kind}\", ");
    // Writing a &str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *line, text);
    line.extend_from_slice(b"]\n");
}

/// The text of `data`, keeping an incomplete UTF-8 sequence at its end for the next chunk
/// (a terminal's output is split anywhere); invalid bytes become U+FFFD. Whole, valid chunks
/// (nearly all of them) are borrowed, not copied.
fn utf8_chunk<'a>(tail: &mut Vec<u8>, data: &'a [u8]) -> Cow<'a, str> {
    if tail.is_empty() {
        if let Ok(text) = std::str::from_utf8(data) {
            return Cow::Borrowed(text);
        }
    }
    tail.extend_from_slice(data);
    let mut text = String::new();
    let mut rest: &[u8] = tail;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                text.push_str(s);
                rest = &[];
                break;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                match e.error_len() {
                    Some(bad) => {
                        text.push('\u{FFFD}');
                        rest = &after[bad..];
                    }
                    None => {
                        rest = after; // incomplete: wait for more
                        break;
                    }
                }
            }
        }
    }
    let keep = rest.to_vec();
    *tail = keep;
    Cow::Owned(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_utf8_is_joined_and_invalid_bytes_replaced() {
        let mut tail = Vec::new();
        let euro = "€".as_bytes();
        assert_eq!(utf8_chunk(&mut tail, &[b'a', euro[0]]), "a");
        assert_eq!(utf8_chunk(&mut tail, &euro[1..]), "€");
        assert_eq!(utf8_chunk(&mut tail, &[0xff, b'b']), "\u{FFFD}b");
        assert!(tail.is_empty());
    }

    #[tokio::test]
    async fn a_recording_is_valid_asciicast() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.cast");
        let failed = Arc::new(AtomicBool::new(false));
        let writers = tokio_util::task::TaskTracker::new();
        let r = Recording::start(&path, 80, 24, "xterm", true, failed.clone(), "c", &writers)
            .await
            .unwrap();
        r.output(&Bytes::from_static(b"hello \xe2\x82")).await;
        r.output(&Bytes::from_static(b"\xac\r\n")).await;
        r.sender().input(&Bytes::from_static(b"ls\r")).await;
        r.sender().resize(100, 30).await;
        r.finish().await;
        assert!(!failed.load(Ordering::Acquire));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(lines[0]["width"], 80);
        assert_eq!(lines[1][1], "o");
        assert_eq!(lines[2][2], "€\r\n");
        assert_eq!(lines[3][1], "i");
        assert_eq!(lines[4][2], "100x30");
    }
}

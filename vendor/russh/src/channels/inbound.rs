//! The queue from the session loop to one channel's reader, and the account that lets the
//! session grant window to the peer only for the bytes the reader has taken (RFC 4254 §5.2).
//!
//! containerssh patch: upstream russh sends WINDOW_ADJUST as soon as data arrives and then
//! awaits a bounded per-channel queue, so a reader that stops reading parks the whole session
//! loop (every other channel, keepalives, rekeying and disconnects). Here the queue never
//! blocks the loop: channel data in it is bounded by the window the session granted, because
//! window is only given back once the reader has taken the data; other messages are capped.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::sync::Notify;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::ChannelMsg;

/// Most non-data messages (requests, replies, window notices) one channel may have waiting
/// for its reader. Beyond that they are dropped with a log line: a peer flooding requests at a
/// channel whose reader is busy must not grow memory without bound.
pub(crate) const MAX_QUEUED_REQUESTS: usize = 1024;

/// What the reader of one channel has taken, for the session loop to grant back.
#[derive(Debug, Default)]
pub(crate) struct Account {
    /// Channel data (bytes) taken by the reader and not yet granted back to the peer.
    consumed: AtomicUsize,
    /// Non-data messages waiting in the queue.
    queued_requests: AtomicUsize,
    /// Wakes the session loop; set when the session registers the channel.
    wake: OnceLock<Arc<Notify>>,
}

impl Account {
    fn consumed(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.consumed.fetch_add(bytes, Ordering::AcqRel);
        if let Some(wake) = self.wake.get() {
            wake.notify_one();
        }
    }

    fn took(&self, msg: &ChannelMsg) {
        match msg {
            ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => {
                self.consumed(data.len())
            }
            other if counts_as_request(other) => {
                self.queued_requests.fetch_sub(1, Ordering::AcqRel);
            }
            _ => {}
        }
    }
}

/// Eof and Close come at most once per channel; data is bounded by the window. Everything
/// else counts against [`MAX_QUEUED_REQUESTS`].
fn counts_as_request(msg: &ChannelMsg) -> bool {
    !matches!(
        msg,
        ChannelMsg::Data { .. }
            | ChannelMsg::ExtendedData { .. }
            | ChannelMsg::Eof
            | ChannelMsg::Close
    )
}

/// Creates the queue of one channel.
pub(crate) fn inbound() -> (InboundSender, InboundReceiver) {
    let (tx, rx) = unbounded_channel();
    let account = Arc::new(Account::default());
    (
        InboundSender {
            tx,
            account: account.clone(),
        },
        InboundReceiver { rx, account },
    )
}

/// The session loop's end of a channel's queue. Sending never waits.
#[derive(Debug)]
pub struct InboundSender {
    tx: UnboundedSender<ChannelMsg>,
    account: Arc<Account>,
}

impl InboundSender {
    /// Queues `msg` for the reader. A message for a reader that is gone, or a request beyond
    /// the cap, is handed back; data for a reader that is gone counts as consumed, so the peer
    /// is not stalled by a channel nobody reads.
    pub(crate) fn try_send(&self, msg: ChannelMsg) -> Result<(), ChannelMsg> {
        let request = counts_as_request(&msg);
        if request {
            let queued = self.account.queued_requests.fetch_add(1, Ordering::AcqRel);
            if queued >= MAX_QUEUED_REQUESTS {
                self.account.queued_requests.fetch_sub(1, Ordering::AcqRel);
                log::debug!("channel queue full; dropping {msg:?}");
                return Err(msg);
            }
        }
        self.tx.send(msg).map_err(|e| {
            let msg = e.0;
            match &msg {
                ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => {
                    self.account.consumed(data.len())
                }
                _ if request => {
                    self.account.queued_requests.fetch_sub(1, Ordering::AcqRel);
                }
                _ => {}
            }
            msg
        })
    }

    /// Bytes the reader took since the last call.
    pub(crate) fn take_consumed(&self) -> usize {
        self.account.consumed.swap(0, Ordering::AcqRel)
    }

    /// Lets the reader wake `wake` (the session loop) when it takes data.
    pub(crate) fn attach(&self, wake: &Arc<Notify>) {
        let _ = self.account.wake.set(wake.clone());
        // Anything taken before the channel was registered is granted on the next wake-up.
        if self.account.consumed.load(Ordering::Acquire) > 0 {
            wake.notify_one();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The reader's end of a channel's queue. Taking a data message is what lets the session
/// grant that much window back to the peer.
#[derive(Debug)]
pub struct InboundReceiver {
    rx: UnboundedReceiver<ChannelMsg>,
    account: Arc<Account>,
}

impl InboundReceiver {
    pub async fn recv(&mut self) -> Option<ChannelMsg> {
        let msg = self.rx.recv().await;
        if let Some(m) = &msg {
            self.account.took(m);
        }
        msg
    }

    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<ChannelMsg>> {
        let poll = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(m)) = &poll {
            self.account.took(m);
        }
        poll
    }

    /// Stops further messages; those already queued can still be received.
    pub fn close(&mut self) {
        self.rx.close();
    }
}

impl Drop for InboundReceiver {
    fn drop(&mut self) {
        // Data still queued will never be read: grant it back so the peer is not stalled
        // (upstream's behaviour for a dropped reader, which got window on receipt).
        self.rx.close();
        while let Ok(msg) = self.rx.try_recv() {
            self.account.took(&msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn data(n: usize) -> ChannelMsg {
        ChannelMsg::Data {
            data: Bytes::from(vec![0u8; n]),
        }
    }

    #[tokio::test]
    async fn window_is_owed_only_for_what_the_reader_took() {
        let (tx, mut rx) = inbound();
        let wake = Arc::new(Notify::new());
        tx.attach(&wake);
        tx.try_send(data(100)).unwrap();
        tx.try_send(data(50)).unwrap();
        assert_eq!(tx.take_consumed(), 0, "nothing read yet, nothing to grant");
        assert!(matches!(rx.recv().await, Some(ChannelMsg::Data { .. })));
        assert_eq!(tx.take_consumed(), 100);
        assert_eq!(tx.take_consumed(), 0, "granted once");
        // The reader woke the session.
        tokio::time::timeout(std::time::Duration::from_secs(1), wake.notified())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_dropped_reader_releases_queued_and_future_data() {
        let (tx, rx) = inbound();
        tx.try_send(data(10)).unwrap();
        drop(rx);
        assert_eq!(tx.take_consumed(), 10);
        assert!(tx.try_send(data(7)).is_err());
        assert_eq!(tx.take_consumed(), 7);
    }

    #[tokio::test]
    async fn requests_are_capped_but_eof_and_close_always_queue() {
        let (tx, mut rx) = inbound();
        for _ in 0..MAX_QUEUED_REQUESTS {
            tx.try_send(ChannelMsg::WindowAdjusted { new_size: 1 })
                .unwrap();
        }
        assert!(
            tx.try_send(ChannelMsg::WindowAdjusted { new_size: 2 })
                .is_err()
        );
        tx.try_send(ChannelMsg::Eof).unwrap();
        tx.try_send(ChannelMsg::Close).unwrap();
        // Taking one request makes room for one more.
        assert!(matches!(
            rx.recv().await,
            Some(ChannelMsg::WindowAdjusted { .. })
        ));
        tx.try_send(ChannelMsg::WindowAdjusted { new_size: 3 })
            .unwrap();
    }

    #[test]
    fn poll_recv_accounts_too() {
        let (tx, mut rx) = inbound();
        tx.try_send(data(42)).unwrap();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(Some(_))));
        assert_eq!(tx.take_consumed(), 42);
    }
}

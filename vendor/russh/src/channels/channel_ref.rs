use std::sync::Arc;

use tokio::sync::Notify;

use super::{InboundSender, WindowSizeRef};
use crate::ChannelMsg;

/// A handle to the [`super::Channel`]'s to be able to transmit messages
/// to it and update it's `window_size`.
#[derive(Debug)]
pub struct ChannelRef {
    pub(super) sender: InboundSender,
    pub(super) window_size: WindowSizeRef,
}

impl ChannelRef {
    pub fn new(sender: InboundSender) -> Self {
        Self {
            sender,
            window_size: WindowSizeRef::new(0),
        }
    }

    pub(crate) fn window_size(&self) -> &WindowSizeRef {
        &self.window_size
    }

    /// Queues a message for the channel's reader without waiting (containerssh patch: the
    /// session loop must never be parked by one channel).
    pub(crate) fn try_send(&self, msg: ChannelMsg) -> Result<(), ChannelMsg> {
        self.sender.try_send(msg)
    }

    /// The same as [`ChannelRef::try_send`], kept async for the existing call sites.
    pub(crate) async fn send(&self, msg: ChannelMsg) -> Result<(), ChannelMsg> {
        self.sender.try_send(msg)
    }

    /// Bytes of channel data the reader took since the last call: window to grant back.
    pub(crate) fn take_consumed(&self) -> usize {
        self.sender.take_consumed()
    }

    /// Registers the session loop's wake-up with this channel.
    pub(crate) fn attach(&self, wake: &Arc<Notify>) {
        self.sender.attach(wake)
    }
}

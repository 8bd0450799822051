//! In-process publish/subscribe: a publication goes straight to the hub when
//! the topic is subscribed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use crate::cluster::{Bus, ClusterResult, Deliver, Publication, Topic};

/// The bus of an embedded node.
pub struct MemoryBus {
    deliver: Arc<dyn Deliver>,
    /// Topic → how many subscribe calls are outstanding.
    subscriptions: Mutex<HashMap<Topic, usize>>,
}

impl MemoryBus {
    /// A bus that hands publications to `deliver`.
    pub fn new(deliver: Arc<dyn Deliver>) -> Self {
        Self {
            deliver,
            subscriptions: Mutex::new(HashMap::new()),
        }
    }

    /// Delivers `publication` if anyone on this node listens to `topic`.
    pub(super) fn dispatch(&self, topic: &Topic, publication: Publication) {
        let subscribed = self
            .subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(topic);
        if subscribed {
            self.deliver.deliver(topic, publication);
        }
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, topic: &Topic, publication: Publication) -> ClusterResult<()> {
        self.dispatch(topic, publication);
        Ok(())
    }

    async fn subscribe(&self, topic: &Topic) -> ClusterResult<()> {
        *self
            .subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(topic.clone())
            .or_default() += 1;
        Ok(())
    }

    async fn unsubscribe(&self, topic: &Topic) {
        let mut subscriptions = self
            .subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = subscriptions.get_mut(topic) {
            *count -= 1;
            if *count == 0 {
                subscriptions.remove(topic);
            }
        }
    }

    async fn ping(&self) -> ClusterResult<()> {
        Ok(())
    }
}

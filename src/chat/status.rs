//! What a node says about itself with each liveness beat, for the admin
//! console: its connections, since when it runs, its error and refusal
//! counters, and how many messages it stored per room lately. Each node
//! counts its own; the admin reads add them up across the live nodes, so
//! nothing of this touches a send's path in the backend.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::domain::RoomName;
use crate::telemetry;

/// The most rooms one status carries rates for (the busiest): a status
/// stays small however many rooms a node serves.
const MAX_RATED_ROOMS: usize = 1000;

/// One node's account of itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Open WebSocket connections.
    pub connections: usize,
    /// When the process started, ms since the epoch.
    pub started_ms: i64,
    /// Errors answered since the start, by code.
    pub errors: BTreeMap<String, u64>,
    /// Refusals since the start: `rate:KIND` (rate limits),
    /// `connection:REASON` (upgrades refused), `room_limit` (joins past
    /// the per-connection room limit).
    pub refusals: BTreeMap<String, u64>,
    /// Room messages this node stored per minute lately, by room.
    pub rates: BTreeMap<String, f64>,
}

impl NodeStatus {
    /// Fills the counters from the node's metrics (the Prometheus text, the
    /// one place every counter ends up in).
    pub fn count(&mut self) {
        let text = telemetry::prometheus().render();
        self.errors = labelled(&text, telemetry::ERRORS, "code");
        self.refusals = labelled(&text, telemetry::RATE_LIMITED, "kind")
            .into_iter()
            .map(|(kind, n)| (format!("rate:{kind}"), n))
            .chain(
                labelled(&text, telemetry::CONNECTIONS_REFUSED, "reason")
                    .into_iter()
                    .map(|(reason, n)| (format!("connection:{reason}"), n)),
            )
            .chain(
                unlabelled(&text, telemetry::ROOM_LIMIT_REFUSALS)
                    .map(|n| ("room_limit".to_owned(), n)),
            )
            .filter(|(_, n)| *n > 0)
            .collect();
    }
}

/// The values of counter `name` by the value of its label `label`, from
/// Prometheus text (`name{label="v",…} 3`).
fn labelled(text: &str, name: &str, label: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let found = labels.split(',').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key == label).then(|| value.trim_matches('"').to_owned())
        });
        if let (Some(found), Ok(value)) = (found, value.trim().parse::<f64>()) {
            // Counters are whole numbers, rendered as floats.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let value = value as u64;
            *out.entry(found).or_insert(0) += value;
        }
    }
    out
}

/// The value of counter `name` without labels, if it was rendered.
fn unlabelled(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        value.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

/// Messages stored per room, in whole minutes: the current minute's count
/// and the previous one's.
#[derive(Debug, Default)]
pub(super) struct RoomRates {
    rooms: Mutex<HashMap<RoomName, Minutes>>,
}

#[derive(Debug, Clone, Copy)]
struct Minutes {
    minute: u64,
    current: u32,
    previous: u32,
}

impl Minutes {
    /// Moved on to `minute`.
    fn at(self, minute: u64) -> Self {
        match minute.saturating_sub(self.minute) {
            0 => self,
            1 => Self {
                minute,
                current: 0,
                previous: self.current,
            },
            _ => Self {
                minute,
                current: 0,
                previous: 0,
            },
        }
    }
}

impl RoomRates {
    /// Counts one message stored in `room` at `now_ms`.
    pub(super) fn record(&self, room: &RoomName, now_ms: u64) {
        let minute = now_ms / 60_000;
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        // The name is cloned only for a room not counted yet.
        if let Some(entry) = rooms.get_mut(room) {
            *entry = entry.at(minute);
            entry.current = entry.current.saturating_add(1);
            return;
        }
        rooms.insert(
            room.clone(),
            Minutes {
                minute,
                current: 1,
                previous: 0,
            },
        );
    }

    /// Messages per minute over the last minute, by room, the busiest
    /// [`MAX_RATED_ROOMS`]: the previous minute's count weighted by how much
    /// of it the last 60 s still cover, plus the current one's. Rooms quiet
    /// for two minutes are forgotten.
    pub(super) fn per_minute(&self, now_ms: u64) -> BTreeMap<String, f64> {
        let minute = now_ms / 60_000;
        #[allow(clippy::cast_precision_loss)]
        let elapsed = (now_ms % 60_000) as f64 / 60_000.0;
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        rooms.retain(|_, m| {
            *m = m.at(minute);
            m.current > 0 || m.previous > 0
        });
        let mut rates: Vec<(String, f64)> = rooms
            .iter()
            .map(|(room, m)| {
                let rate = f64::from(m.previous).mul_add(1.0 - elapsed, f64::from(m.current));
                (room.to_string(), rate)
            })
            .collect();
        drop(rooms);
        rates.sort_by(|a, b| b.1.total_cmp(&a.1));
        rates.truncate(MAX_RATED_ROOMS);
        rates.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_by_label() {
        let text = "# TYPE chorus_errors_total counter\n\
                    chorus_errors_total{code=\"rate_limited\"} 3\n\
                    chorus_errors_total{code=\"not_found\",node=\"a\"} 2\n\
                    chorus_errors_total_other{code=\"x\"} 9\n\
                    chorus_room_limit_refusals_total 4\n";
        let errors = labelled(text, "chorus_errors_total", "code");
        assert_eq!(errors.get("rate_limited"), Some(&3));
        assert_eq!(errors.get("not_found"), Some(&2));
        assert_eq!(errors.len(), 2);
        assert_eq!(
            unlabelled(text, "chorus_room_limit_refusals_total"),
            Some(4)
        );
        assert_eq!(unlabelled(text, "chorus_errors_total"), None);
    }

    #[test]
    fn rates_slide_over_the_last_minute() {
        let rates = RoomRates::default();
        let room = RoomName::parse("lobby").unwrap();
        for _ in 0..30 {
            rates.record(&room, 60_000);
        }
        assert_eq!(rates.per_minute(60_000).get("lobby"), Some(&30.0));
        // Half-way through the next minute, half the previous one counts.
        rates.record(&room, 150_000);
        assert_eq!(rates.per_minute(150_000).get("lobby"), Some(&16.0));
        // Two quiet minutes: forgotten.
        assert!(rates.per_minute(300_000).is_empty());
        assert!(rates.rooms.lock().unwrap().is_empty());
    }
}

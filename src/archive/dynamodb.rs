//! The archive in one DynamoDB table (`CHORUS_ARCHIVE_DYNAMODB_TABLE`).
//!
//! Partition key `log` (S, [`log_name`]), sort key `id` (S: the message id
//! as `MS:SEQ`, each part zero-padded to 20 digits, so the lexical order of
//! the key is the order of the ids), attribute `frame` (B, the message as
//! delivered). A store is `BatchWriteItem` in chunks of 25, and a re-put of
//! a key writes the same item again, so a repeated store adds nothing.
//! Reads are one `Query` per page on `log` with a range on `id`.
//!
//! The client takes its region, credentials and endpoint from the standard
//! AWS environment (`AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, an
//! instance or task role, `AWS_ENDPOINT_URL`, …).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest,
    ReturnValue, ScalarAttributeType, TableStatus, WriteRequest,
};
use bytes::Bytes;
use futures_util::future::join_all;

use super::{Archive, ArchiveError, ArchiveResult, Entry, log_name};
use crate::cluster::{Log, Stored};
use crate::domain::MessageId;

/// Longest any one call to DynamoDB may take, the SDK's own retries
/// included.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Items per `BatchWriteItem`: DynamoDB's maximum.
const WRITE_CHUNK: usize = 25;
/// Chunks written at once: an archiver batch of a few thousand messages
/// takes a few dozen round trips instead of a hundred, without a burst
/// that a table's partition would throttle.
const WRITES_AT_ONCE: usize = 4;
/// Calls for one chunk whose items DynamoDB left unprocessed (throttling),
/// with waits doubling from the first to the second between them; past
/// the last, the store fails and the archiver retries the whole batch.
const WRITE_ATTEMPTS: u32 = 8;
const WRITE_WAITS: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));
/// Items one `Query` asks for: a few hundred frames stay well inside the
/// 1 MB a Query returns at most; longer reads follow `LastEvaluatedKey`.
const QUERY_PAGE: usize = 500;
/// How long `prepare` waits for a table it created (or found being
/// created) to become ACTIVE, and how often it asks.
const ACTIVE_WITHIN: Duration = Duration::from_secs(60);
const ACTIVE_POLL: Duration = Duration::from_millis(200);

/// Region and placeholder key for a local DynamoDB-compatible server
/// (DynamoDB Local, moto) when the environment names none: such servers
/// accept any.
const LOCAL_REGION: &str = "us-east-1";
const LOCAL_KEY: (&str, &str) = ("chorus-local", "chorus-local");

/// The archive in one DynamoDB table.
pub struct DynamoArchive {
    client: Client,
    table: String,
}

/// A failed DynamoDB call, with the SDK's whole chain of causes.
#[derive(Debug, thiserror::Error)]
#[error("DynamoDB {0}")]
struct Failed(String);

fn unavailable(what: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Unavailable(Box::new(Failed(what.to_string())))
}

/// Runs one call, bounded by [`CALL_TIMEOUT`].
async fn bounded<T, E>(
    what: &str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<Result<T, E>, ArchiveError> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| unavailable(format_args!("{what}: no answer within {CALL_TIMEOUT:?}")))
}

/// The sort key of `id`: both parts zero-padded to the 20 digits of
/// `u64::MAX`, so that `"…0999:…"` sorts before `"…1000:…"`.
pub fn sort_key(id: MessageId) -> String {
    format!("{:020}:{:020}", id.ms(), id.seq())
}

fn parse_sort_key(key: &str) -> Option<MessageId> {
    let (ms, seq) = key.split_once(':')?;
    let digits = |p: &str| p.len() == 20 && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(ms) || !digits(seq) {
        return None;
    }
    Some(MessageId::new(ms.parse().ok()?, seq.parse().ok()?))
}

/// True when the environment names a region for the default chain.
fn region_in_env() -> bool {
    ["AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"]
        .iter()
        .any(|var| std::env::var_os(var).is_some())
}

/// True when the environment names credentials for the default chain.
fn credentials_in_env() -> bool {
    [
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ]
    .iter()
    .any(|var| std::env::var_os(var).is_some())
}

impl DynamoArchive {
    /// A client for `table`, configured from the AWS environment. With
    /// `endpoint` (a local DynamoDB-compatible server) the client talks to
    /// it instead of `AWS_ENDPOINT_URL` or AWS, and a region and credentials
    /// the environment does not name are placeholders. Nothing is called
    /// yet: a table that cannot be reached delays the archive, not the chat.
    pub async fn new(table: &str, endpoint: Option<&str>) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if endpoint.is_some() {
            if !region_in_env() {
                loader = loader.region(Region::new(LOCAL_REGION));
            }
            if !credentials_in_env() {
                loader = loader.credentials_provider(Credentials::new(
                    LOCAL_KEY.0,
                    LOCAL_KEY.1,
                    None,
                    None,
                    "chorus-local-endpoint",
                ));
            }
        }
        let shared = loader.load().await;
        let mut config = aws_sdk_dynamodb::config::Builder::from(&shared);
        if let Some(endpoint) = endpoint {
            config = config.endpoint_url(endpoint);
        }
        Self {
            client: Client::from_conf(config.build()),
            table: table.to_owned(),
        }
    }

    /// The table's status; `None` when it does not exist.
    async fn status(&self) -> ArchiveResult<Option<TableStatus>> {
        let described = bounded(
            "DescribeTable",
            self.client.describe_table().table_name(&self.table).send(),
        )
        .await?;
        match described {
            Ok(output) => Ok(Some(
                output
                    .table()
                    .and_then(|t| t.table_status())
                    .cloned()
                    .unwrap_or_else(|| TableStatus::from("UNKNOWN")),
            )),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(error) => Err(unavailable(format_args!(
                "DescribeTable {}: {}",
                self.table,
                DisplayErrorContext(&error)
            ))),
        }
    }

    /// Creates the table on demand. Another node creating it at the same
    /// time is as good as creating it here.
    async fn create(&self) -> ArchiveResult<()> {
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(unavailable)
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(unavailable)
        };
        let created = bounded(
            "CreateTable",
            self.client
                .create_table()
                .table_name(&self.table)
                .attribute_definitions(attribute("log")?)
                .attribute_definitions(attribute("id")?)
                .key_schema(key("log", KeyType::Hash)?)
                .key_schema(key("id", KeyType::Range)?)
                .billing_mode(BillingMode::PayPerRequest)
                .send(),
        )
        .await?;
        match created {
            Ok(_) => {
                tracing::info!(table = %self.table, "created the DynamoDB archive table");
                Ok(())
            }
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) =>
            {
                Ok(())
            }
            Err(error) => Err(unavailable(format_args!(
                "CreateTable {}: {}",
                self.table,
                DisplayErrorContext(&error)
            ))),
        }
    }

    /// One chunk of at most [`WRITE_CHUNK`] puts, with what DynamoDB leaves
    /// unprocessed sent again.
    async fn write(&self, mut requests: Vec<WriteRequest>) -> ArchiveResult<()> {
        let mut wait = WRITE_WAITS.0;
        for attempt in 1..=WRITE_ATTEMPTS {
            let written = bounded(
                "BatchWriteItem",
                self.client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send(),
            )
            .await?
            .map_err(|error| {
                unavailable(format_args!(
                    "BatchWriteItem {}: {}",
                    self.table,
                    DisplayErrorContext(&error)
                ))
            })?;
            requests = written
                .unprocessed_items
                .and_then(|mut left| left.remove(&self.table))
                .unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
            if attempt < WRITE_ATTEMPTS {
                tracing::debug!(
                    left = requests.len(),
                    attempt,
                    "DynamoDB left items unprocessed"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(WRITE_WAITS.1);
            }
        }
        Err(unavailable(format_args!(
            "BatchWriteItem {}: {} items still unprocessed after {WRITE_ATTEMPTS} attempts",
            self.table,
            requests.len()
        )))
    }

    /// Up to `limit` items of `log` whose id is past `from` (below it when
    /// `forward` is false; any when `from` is `None`), in the order asked.
    async fn query(
        &self,
        log: &Log,
        from: Option<MessageId>,
        forward: bool,
        limit: usize,
    ) -> ArchiveResult<Vec<Stored>> {
        let mut found = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        while found.len() < limit {
            let page = (limit - found.len()).min(QUERY_PAGE);
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_names("#log", "log")
                .expression_attribute_values(":log", AttributeValue::S(log_name(log)))
                .scan_index_forward(forward)
                // A page read right after the archiver stored a message and
                // Redis trimmed it must see it, or paging skips it.
                .consistent_read(true)
                .limit(i32::try_from(page).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take());
            query = match from {
                Some(id) => query
                    .key_condition_expression(if forward {
                        "#log = :log AND #id > :id"
                    } else {
                        "#log = :log AND #id < :id"
                    })
                    .expression_attribute_names("#id", "id")
                    .expression_attribute_values(":id", AttributeValue::S(sort_key(id))),
                None => query.key_condition_expression("#log = :log"),
            };
            let output = match bounded("Query", query.send()).await? {
                Ok(output) => output,
                // A table not created yet (the archiver's `prepare` has not
                // run, or is waiting for it to be ACTIVE) holds nothing; the
                // archiver's writes fail, and count, until it exists.
                Err(error)
                    if error
                        .as_service_error()
                        .is_some_and(|e| e.is_resource_not_found_exception()) =>
                {
                    break;
                }
                Err(error) => {
                    return Err(unavailable(format_args!(
                        "Query {}: {}",
                        self.table,
                        DisplayErrorContext(&error)
                    )));
                }
            };
            for item in output.items() {
                found.push(Self::stored(item)?);
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        found.truncate(limit);
        Ok(found)
    }

    fn stored(item: &HashMap<String, AttributeValue>) -> ArchiveResult<Stored> {
        let id = item
            .get("id")
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| ArchiveError::Corrupt("an item without a string id".to_owned()))?;
        let id = parse_sort_key(id)
            .ok_or_else(|| ArchiveError::Corrupt(format!("an item with id {id:?}")))?;
        let frame = item
            .get("frame")
            .and_then(|v| v.as_b().ok())
            .ok_or_else(|| ArchiveError::Corrupt(format!("item {id} has no binary frame")))?;
        Ok(Stored {
            id,
            payload: Bytes::copy_from_slice(frame.as_ref()),
        })
    }
}

#[async_trait]
impl Archive for DynamoArchive {
    /// Creates the table if it is missing (on-demand capacity), then waits
    /// until it is ACTIVE, for at most [`ACTIVE_WITHIN`].
    async fn prepare(&self) -> ArchiveResult<()> {
        let deadline = tokio::time::Instant::now() + ACTIVE_WITHIN;
        let mut created = false;
        loop {
            match self.status().await? {
                Some(TableStatus::Active) => return Ok(()),
                None if !created => {
                    self.create().await?;
                    created = true;
                    continue;
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(unavailable(format_args!(
                    "table {} is not ACTIVE after {ACTIVE_WITHIN:?}",
                    self.table
                )));
            }
            tokio::time::sleep(ACTIVE_POLL).await;
        }
    }

    async fn store(&self, batch: &[Entry]) -> ArchiveResult<()> {
        // One request may not name a key twice; a batch that does holds the
        // same message twice, and one put of it is enough.
        let mut seen = HashSet::with_capacity(batch.len());
        let mut requests = Vec::with_capacity(batch.len());
        for entry in batch {
            let log = log_name(&entry.log);
            let id = sort_key(entry.message.id);
            if !seen.insert((log.clone(), id.clone())) {
                continue;
            }
            let put = PutRequest::builder()
                .item("log", AttributeValue::S(log))
                .item("id", AttributeValue::S(id))
                .item(
                    "frame",
                    AttributeValue::B(Blob::new(entry.message.payload.to_vec())),
                )
                .build()
                .map_err(unavailable)?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        let mut chunks = Vec::with_capacity(requests.len().div_ceil(WRITE_CHUNK));
        while !requests.is_empty() {
            let rest = requests.split_off(requests.len().min(WRITE_CHUNK));
            chunks.push(std::mem::replace(&mut requests, rest));
        }
        let mut chunks = chunks.into_iter().peekable();
        while chunks.peek().is_some() {
            let writes = chunks.by_ref().take(WRITES_AT_ONCE).map(|c| self.write(c));
            for written in join_all(writes).await {
                written?;
            }
        }
        Ok(())
    }

    async fn before(
        &self,
        log: &Log,
        before: Option<MessageId>,
        limit: usize,
    ) -> ArchiveResult<Vec<Stored>> {
        let mut newest_first = self.query(log, before, false, limit).await?;
        newest_first.reverse();
        Ok(newest_first)
    }

    async fn after(&self, log: &Log, after: MessageId, limit: usize) -> ArchiveResult<Vec<Stored>> {
        self.query(log, Some(after), true, limit).await
    }

    async fn delete(&self, log: &Log, id: MessageId) -> ArchiveResult<bool> {
        let call = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("log", AttributeValue::S(log_name(log)))
            .key("id", AttributeValue::S(sort_key(id)))
            .return_values(ReturnValue::AllOld)
            .send();
        let output = bounded("DeleteItem", call)
            .await?
            .map_err(|error| unavailable(DisplayErrorContext(&error)))?;
        Ok(output.attributes().is_some_and(|a| !a.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamo_sort_keys_order_as_ids_do_and_read_back() {
        let ids = [
            MessageId::new(9, 10),
            MessageId::new(999, 9),
            MessageId::new(999, 10),
            MessageId::new(1000, 0),
            MessageId::new(u64::MAX, u64::MAX),
        ];
        for pair in ids.windows(2) {
            assert!(sort_key(pair[0]) < sort_key(pair[1]), "{pair:?}");
        }
        for id in ids {
            assert_eq!(parse_sort_key(&sort_key(id)), Some(id));
        }
        assert_eq!(parse_sort_key("999:10"), None);
        assert_eq!(parse_sort_key(&format!("{:020}-{:020}", 1, 2)), None);
    }
}

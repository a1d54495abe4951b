//! The event log in the store, which DescribeEvents reads.

use sqlx::Row;

use super::{Store, StoreError};
use crate::domain::Timestamp;

/// An event, as DescribeEvents shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub date: Timestamp,
    pub source_type: String,
    pub source_identifier: String,
    pub source_arn: String,
    pub event_code: Option<String>,
    pub categories: Vec<String>,
    pub message: String,
}

/// Which events a listing returns; empty means "any".
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub source_type: Option<String>,
    pub source_identifier: Option<String>,
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
    pub categories: Vec<String>,
}

impl Store {
    /// Deletes events older than `before`.
    pub async fn prune_events(&self, before: Timestamp) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM events WHERE date < $1")
            .bind(before.as_micros())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn insert_event(&self, event: &Event) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO events (id, date, source_type, source_identifier, source_arn, event_code, categories, message) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(event.id.clone())
        .bind(event.date.as_micros())
        .bind(event.source_type.clone())
        .bind(event.source_identifier.clone())
        .bind(event.source_arn.clone())
        .bind(event.event_code.clone())
        .bind(serde_json::to_string(&event.categories).expect("strings serialize"))
        .bind(event.message.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Events in date order (oldest first, as RDS lists them) after the `(date, id)` key
    /// `after`, at most `limit`.
    pub async fn events(
        &self,
        filter: &EventFilter,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        let mut sql = super::sql::Sql::new(
            "SELECT id, date, source_type, source_identifier, source_arn, event_code, categories, message \
             FROM events WHERE 1 = 1"
                .into(),
        );
        if let Some(t) = &filter.source_type {
            sql.push_bound(" AND source_type = ", t.clone());
        }
        if let Some(id) = &filter.source_identifier {
            sql.push_bound(" AND source_identifier = ", id.clone());
        }
        if let Some(start) = filter.start {
            sql.push_bound(" AND date >= ", start.as_micros());
        }
        if let Some(end) = filter.end {
            sql.push_bound(" AND date <= ", end.as_micros());
        }
        if let Some((date, id)) = after {
            sql.push_bound(" AND (date > ", date);
            sql.push_bound(" OR (date = ", date);
            sql.push_bound(" AND id > ", id);
            sql.text.push_str("))");
        }
        if !filter.categories.is_empty() {
            // Categories are a JSON array of strings; match each quoted name.
            sql.text.push_str(" AND (");
            for (i, category) in filter.categories.iter().enumerate() {
                let before = if i == 0 {
                    "categories LIKE "
                } else {
                    " OR categories LIKE "
                };
                sql.push_bound(
                    before,
                    format!(
                        "%{}%",
                        serde_json::to_string(category).expect("strings serialize")
                    ),
                );
            }
            sql.text.push(')');
        }
        sql.text
            .push_str(&format!(" ORDER BY date, id LIMIT {limit}"));
        let rows = sql.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                let categories: String = row.try_get(6)?;
                Ok(Event {
                    id: row.try_get(0)?,
                    date: Timestamp::from_micros(row.try_get(1)?),
                    source_type: row.try_get(2)?,
                    source_identifier: row.try_get(3)?,
                    source_arn: row.try_get(4)?,
                    event_code: row.try_get(5)?,
                    categories: serde_json::from_str(&categories)
                        .map_err(|e| StoreError::Invalid(format!("bad categories column: {e}")))?,
                    message: row.try_get(7)?,
                })
            })
            .collect()
    }
}

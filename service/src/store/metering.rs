//! Metering in the store: each volume's last sample and the hourly usage it integrates into,
//! and recent samples for metrics and projections.
//!
//! Recording a sample is safe with several control-plane replicas: the usage is added and the
//! last sample moved in one transaction that only succeeds if the last sample is still the
//! one the usage was computed from, so a sample is never counted twice.

use sqlx::Row;

use super::{Store, StoreError};
use crate::billing::{usage_between, Sample};
use crate::domain::Timestamp;

/// What the meter read from a node for one volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterSample {
    pub resource_id: String,
    pub cluster_id: String,
    pub at: Timestamp,
    pub stored: i64,
    pub created: i64,
    pub window_secs: i64,
    pub actual_secs: i64,
}

/// A change of a volume's window alert, for the events it raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertChange {
    Raised,
    Cleared,
}

/// What recording a sample did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The first sample of the volume: metering starts here.
    First,
    /// Usage since the previous sample was added; the alert changed, or not.
    Added(Option<AlertChange>),
    /// Another replica recorded a sample for this volume at the same time; nothing changed.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterState {
    pub resource_id: String,
    pub cluster_id: String,
    pub first_sampled_at: Timestamp,
    pub sampled_at: Timestamp,
    pub stored: i64,
    pub created: i64,
    pub window_alert: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub resource_id: String,
    pub cluster_id: String,
    pub hour_start: Timestamp,
    /// Twice the record-microseconds.
    pub units: i128,
}

impl Store {
    /// Adds the usage between the volume's previous sample and `sample`, and makes `sample`
    /// the previous one; `alert` is whether the volume's actual window is now below target.
    pub async fn record_sample(
        &self,
        sample: &MeterSample,
        alert: bool,
    ) -> Result<Recorded, StoreError> {
        let mut tx = self.begin().await?;
        let result = async {
        let previous = sqlx::query(
            "SELECT sampled_at, stored, window_alert FROM meter_state WHERE resource_id = $1",
        )
        .bind(sample.resource_id.clone())
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match previous {
            None => {
                sqlx::query(
                    "INSERT INTO meter_state (resource_id, cluster_id, first_sampled_at, sampled_at, stored, created, window_alert) \
                     VALUES ($1, $2, $3, $3, $4, $5, $6) ON CONFLICT (resource_id) DO NOTHING",
                )
                .bind(sample.resource_id.clone())
                .bind(sample.cluster_id.clone())
                .bind(sample.at.as_micros())
                .bind(sample.stored)
                .bind(sample.created)
                .bind(i64::from(alert))
                .execute(&mut *tx)
                .await?;
                Recorded::First
            }
            Some(row) => {
                let last_at: i64 = row.try_get(0)?;
                let last_stored: i64 = row.try_get(1)?;
                let was_alert = row.try_get::<i64, _>(2)? != 0;
                if sample.at.as_micros() <= last_at {
                    return Ok(Recorded::Skipped);
                }
                let moved = sqlx::query(
                    "UPDATE meter_state SET sampled_at = $1, stored = $2, created = $3, window_alert = $4 \
                     WHERE resource_id = $5 AND sampled_at = $6",
                )
                .bind(sample.at.as_micros())
                .bind(sample.stored)
                .bind(sample.created)
                .bind(i64::from(alert))
                .bind(sample.resource_id.clone())
                .bind(last_at)
                .execute(&mut *tx)
                .await?;
                if moved.rows_affected() == 0 {
                    return Ok(Recorded::Skipped);
                }
                let from = Sample {
                    at_us: last_at,
                    stored: last_stored,
                };
                let to = Sample {
                    at_us: sample.at.as_micros(),
                    stored: sample.stored,
                };
                for piece in usage_between(from, to) {
                    let units = i64::try_from(piece.units)
                        .map_err(|_| StoreError::Invalid("usage of one hour overflows".into()))?;
                    sqlx::query(
                        "INSERT INTO usage_hours (resource_id, cluster_id, hour_start, units) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (resource_id, hour_start) DO UPDATE SET units = usage_hours.units + excluded.units",
                    )
                    .bind(sample.resource_id.clone())
                    .bind(sample.cluster_id.clone())
                    .bind(piece.hour_start_us)
                    .bind(units)
                    .execute(&mut *tx)
                    .await?;
                }
                Recorded::Added(match (was_alert, alert) {
                    (false, true) => Some(AlertChange::Raised),
                    (true, false) => Some(AlertChange::Cleared),
                    _ => None,
                })
            }
        };
        sqlx::query(
            "INSERT INTO meter_samples (resource_id, cluster_id, sampled_at, stored, created, window_secs, actual_secs) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (resource_id, sampled_at) DO NOTHING",
        )
        .bind(sample.resource_id.clone())
        .bind(sample.cluster_id.clone())
        .bind(sample.at.as_micros())
        .bind(sample.stored)
        .bind(sample.created)
        .bind(sample.window_secs)
        .bind(sample.actual_secs)
        .execute(&mut *tx)
        .await?;
        Ok(outcome)
        }
        .await;
        tx.finish(result).await
    }

    pub async fn meter_state(&self, resource_id: &str) -> Result<Option<MeterState>, StoreError> {
        let row = sqlx::query(
            "SELECT resource_id, cluster_id, first_sampled_at, sampled_at, stored, created, window_alert \
             FROM meter_state WHERE resource_id = $1",
        )
        .bind(resource_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(MeterState {
                resource_id: row.try_get(0)?,
                cluster_id: row.try_get(1)?,
                first_sampled_at: Timestamp::from_micros(row.try_get(2)?),
                sampled_at: Timestamp::from_micros(row.try_get(3)?),
                stored: row.try_get(4)?,
                created: row.try_get(5)?,
                window_alert: row.try_get::<i64, _>(6)? != 0,
            })
        })
        .transpose()
    }

    /// Usage rows of the hours that overlap `[from, to)`, optionally of one volume.
    pub async fn usage(
        &self,
        from: Timestamp,
        to: Timestamp,
        resource_id: Option<&str>,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let first_hour =
            from.as_micros().div_euclid(crate::billing::HOUR_US) * crate::billing::HOUR_US;
        let rows = sqlx::query(
            "SELECT resource_id, cluster_id, hour_start, units FROM usage_hours \
             WHERE hour_start >= $1 AND hour_start < $2 AND ($3 = '' OR resource_id = $3) \
             ORDER BY hour_start, cluster_id, resource_id",
        )
        .bind(first_hour)
        .bind(to.as_micros())
        .bind(resource_id.unwrap_or_default().to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(UsageRow {
                    resource_id: row.try_get(0)?,
                    cluster_id: row.try_get(1)?,
                    hour_start: Timestamp::from_micros(row.try_get(2)?),
                    units: i128::from(row.try_get::<i64, _>(3)?),
                })
            })
            .collect()
    }

    /// A volume's samples from `since` on, oldest first.
    pub async fn samples_since(
        &self,
        resource_id: &str,
        since: Timestamp,
    ) -> Result<Vec<MeterSample>, StoreError> {
        let rows = sqlx::query(
            "SELECT resource_id, cluster_id, sampled_at, stored, created, window_secs, actual_secs FROM meter_samples \
             WHERE resource_id = $1 AND sampled_at >= $2 ORDER BY sampled_at",
        )
        .bind(resource_id.to_string())
        .bind(since.as_micros())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sample_from_row).collect()
    }

    /// Every volume's samples from `since` on, by volume, oldest first.
    pub async fn all_samples_since(
        &self,
        since: Timestamp,
    ) -> Result<Vec<MeterSample>, StoreError> {
        let rows = sqlx::query(
            "SELECT resource_id, cluster_id, sampled_at, stored, created, window_secs, actual_secs FROM meter_samples \
             WHERE sampled_at >= $1 ORDER BY resource_id, sampled_at",
        )
        .bind(since.as_micros())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sample_from_row).collect()
    }

    /// Deletes samples older than `before`.
    pub async fn prune_samples(&self, before: Timestamp) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM meter_samples WHERE sampled_at < $1")
            .bind(before.as_micros())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn sample_from_row(row: &sqlx::any::AnyRow) -> Result<MeterSample, StoreError> {
    Ok(MeterSample {
        resource_id: row.try_get(0)?,
        cluster_id: row.try_get(1)?,
        at: Timestamp::from_micros(row.try_get(2)?),
        stored: row.try_get(3)?,
        created: row.try_get(4)?,
        window_secs: row.try_get(5)?,
        actual_secs: row.try_get(6)?,
    })
}

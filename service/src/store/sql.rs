//! A statement whose conditions depend on the request, with its arguments numbered as pushed.

use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool};

use super::StoreError;

pub(super) struct Sql {
    pub(super) text: String,
    args: Vec<Arg>,
}

pub(super) enum Arg {
    Text(String),
    Int(i64),
}

impl From<String> for Arg {
    fn from(s: String) -> Self {
        Arg::Text(s)
    }
}

impl From<i64> for Arg {
    fn from(i: i64) -> Self {
        Arg::Int(i)
    }
}

impl Sql {
    pub(super) fn new(text: String) -> Self {
        Sql {
            text,
            args: Vec::new(),
        }
    }

    pub(super) fn push_bound(&mut self, before: &str, arg: impl Into<Arg>) {
        self.args.push(arg.into());
        self.text.push_str(&format!("{before}${}", self.args.len()));
    }

    /// ` AND column IN (…)`, unless `values` is empty.
    pub(super) fn any_of(&mut self, column: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        self.text.push_str(&format!(" AND {column} IN ("));
        for (i, value) in values.iter().enumerate() {
            self.push_bound(if i == 0 { "" } else { ", " }, value.clone());
        }
        self.text.push(')');
    }

    pub(super) fn query(&self) -> sqlx::query::Query<'_, Any, sqlx::any::AnyArguments<'_>> {
        let mut query = sqlx::query(&self.text);
        for arg in &self.args {
            query = match arg {
                Arg::Text(s) => query.bind(s.as_str()),
                Arg::Int(i) => query.bind(*i),
            };
        }
        query
    }

    pub(super) async fn fetch_all(&self, pool: &AnyPool) -> Result<Vec<AnyRow>, StoreError> {
        Ok(self.query().fetch_all(pool).await?)
    }

    pub(super) async fn execute(&self, pool: &AnyPool) -> Result<u64, StoreError> {
        Ok(self.query().execute(pool).await?.rows_affected())
    }
}

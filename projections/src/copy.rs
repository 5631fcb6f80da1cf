//! Bulk writes with `COPY ... FROM STDIN` (text format), in chunks that each
//! commit on their own: a rebuild fills a schema nobody reads yet, and short
//! write transactions never hold back the store's gap-free readers.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::ProjectionError;

/// Bytes buffered before a chunk is sent as one `COPY` statement.
const CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// Rows for one table, written in chunks as they accumulate.
pub(crate) struct Copier<'a> {
    pool: &'a PgPool,
    statement: String,
    buf: Vec<u8>,
    at_row_start: bool,
    rows: u64,
}

impl<'a> Copier<'a> {
    /// A writer of rows into `table` (already quoted and qualified) with
    /// `columns` (a comma-separated list).
    pub(crate) fn new(pool: &'a PgPool, table: &str, columns: &str) -> Self {
        Copier {
            pool,
            statement: format!("COPY {table} ({columns}) FROM STDIN"),
            buf: Vec::with_capacity(CHUNK_BYTES + 64 * 1024),
            at_row_start: true,
            rows: 0,
        }
    }

    fn separate(&mut self) {
        if !self.at_row_start {
            self.buf.push(b'\t');
        }
        self.at_row_start = false;
    }

    /// A text field, escaped for the text format.
    pub(crate) fn text(&mut self, value: &str) -> &mut Self {
        self.separate();
        for &b in value.as_bytes() {
            match b {
                b'\\' => self.buf.extend_from_slice(b"\\\\"),
                b'\t' => self.buf.extend_from_slice(b"\\t"),
                b'\n' => self.buf.extend_from_slice(b"\\n"),
                b'\r' => self.buf.extend_from_slice(b"\\r"),
                _ => self.buf.push(b),
            }
        }
        self
    }

    /// A nullable text field.
    pub(crate) fn opt_text(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    /// SQL NULL.
    pub(crate) fn null(&mut self) -> &mut Self {
        self.separate();
        self.buf.extend_from_slice(b"\\N");
        self
    }

    /// A bigint field.
    pub(crate) fn int(&mut self, value: i64) -> &mut Self {
        self.separate();
        self.buf.extend_from_slice(value.to_string().as_bytes());
        self
    }

    /// A boolean field.
    pub(crate) fn boolean(&mut self, value: bool) -> &mut Self {
        self.separate();
        self.buf.push(if value { b't' } else { b'f' });
        self
    }

    /// A uuid field.
    pub(crate) fn uuid(&mut self, value: Uuid) -> &mut Self {
        self.separate();
        let mut out = [0u8; uuid::fmt::Hyphenated::LENGTH];
        self.buf
            .extend_from_slice(value.hyphenated().encode_lower(&mut out).as_bytes());
        self
    }

    /// A timestamptz field, at the microsecond precision Postgres keeps.
    pub(crate) fn timestamp(&mut self, value: DateTime<Utc>) -> &mut Self {
        self.separate();
        let text = value.to_rfc3339_opts(SecondsFormat::Micros, true);
        self.buf.extend_from_slice(text.as_bytes());
        self
    }

    /// A nullable date field.
    pub(crate) fn date(&mut self, value: Option<NaiveDate>) -> &mut Self {
        match value {
            Some(day) => {
                self.separate();
                self.buf
                    .extend_from_slice(day.format("%Y-%m-%d").to_string().as_bytes());
                self
            }
            None => self.null(),
        }
    }

    /// Ends the current row; sends a chunk when enough rows are buffered.
    pub(crate) async fn end_row(&mut self) -> Result<(), ProjectionError> {
        self.buf.push(b'\n');
        self.at_row_start = true;
        self.rows += 1;
        if self.buf.len() >= CHUNK_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ProjectionError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.acquire().await?;
        let mut copy = conn.copy_in_raw(&self.statement).await?;
        let sent = copy.send(self.buf.as_slice()).await;
        match sent {
            Ok(_) => {
                copy.finish().await?;
            }
            Err(error) => {
                let _ = copy.abort(error.to_string()).await;
                return Err(error.into());
            }
        }
        self.buf.clear();
        Ok(())
    }

    /// Sends the rows still buffered; the number of rows written in all.
    pub(crate) async fn finish(mut self) -> Result<u64, ProjectionError> {
        self.flush().await?;
        Ok(self.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn text_fields_escape_what_the_copy_text_format_reserves() {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://localhost/none")
            .expect("a lazy pool needs no server");
        let mut copier = Copier::new(&pool, "t", "a");
        copier.text("a\tb\\c\nd\re").null().int(-7).boolean(true);
        assert_eq!(copier.buf, b"a\\tb\\\\c\\nd\\re\t\\N\t-7\tt");
    }
}

//! Reading the archive back: `alertpipe archive ls` (files per service and day, with rows and
//! bytes) and `alertpipe archive cat` (lines of a service in a time range, in time order).

use std::collections::BTreeMap;

use arrow_array::{Array, Int64Array, StringArray};
use chrono::{DateTime, NaiveDate, Utc};
use futures_util::TryStreamExt;
use opendal::{EntryMode, Operator};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub path: String,
    pub env: String,
    pub service: String,
    pub day: NaiveDate,
    pub bytes: u64,
    pub rows: i64,
    /// For a compacted file: the names (same directory) of the files whose rows it holds.
    pub replaces: Vec<String>,
}

impl FileInfo {
    /// The directory part of the path (`env/service/YYYY/MM/DD`).
    pub fn dir(&self) -> &str {
        self.path.rsplit_once('/').map_or("", |(d, _)| d)
    }

    pub fn name(&self) -> &str {
        self.path.rsplit_once('/').map_or(&self.path, |(_, n)| n)
    }
}

/// Splits `<env>/<service>/<YYYY>/<MM>/<DD>/<file>.{snappy,zstd}.parquet`.
fn parse_path(path: &str) -> Option<(String, String, NaiveDate)> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let [env, service, y, m, d, file] = parts.as_slice() else {
        return None;
    };
    if !(file.ends_with(".snappy.parquet") || file.ends_with(".zstd.parquet")) {
        return None;
    }
    let day = NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)?;
    Some((env.to_string(), service.to_string(), day))
}

async fn read(op: &Operator, path: &str) -> anyhow::Result<bytes::Bytes> {
    Ok(op.read(path).await?.to_bytes())
}

/// Every archive file a reader should see, sorted by path: files a compacted file replaces
/// are left out (they exist only between a compaction's rename and its deletes, or after a
/// crash there; `compact` deletes them).
pub async fn list(op: &Operator) -> anyhow::Result<Vec<FileInfo>> {
    Ok(list_all(op).await?.0)
}

/// (visible files, files superseded by a compacted file in the same directory).
pub async fn list_all(op: &Operator) -> anyhow::Result<(Vec<FileInfo>, Vec<FileInfo>)> {
    let mut all = Vec::new();
    let mut lister = op.lister_with("").recursive(true).await?;
    while let Some(entry) = lister.try_next().await? {
        if entry.metadata().mode() != EntryMode::FILE {
            continue;
        }
        let Some((env, service, day)) = parse_path(entry.path()) else {
            continue;
        };
        let data = read(op, entry.path()).await?;
        let bytes = data.len() as u64;
        let builder = ParquetRecordBatchReaderBuilder::try_new(data)?;
        let meta = builder.metadata().file_metadata();
        let replaces = super::parquet::compacted_from(meta);
        all.push(FileInfo {
            path: entry.path().to_owned(),
            env,
            service,
            day,
            bytes,
            rows: meta.num_rows(),
            replaces,
        });
    }
    all.sort_by(|a, b| a.path.cmp(&b.path));
    let superseded: std::collections::HashSet<(String, String)> = all
        .iter()
        .flat_map(|f| f.replaces.iter().map(|n| (f.dir().to_owned(), n.clone())))
        .collect();
    Ok(all
        .into_iter()
        .partition(|f| !superseded.contains(&(f.dir().to_owned(), f.name().to_owned()))))
}

/// Lines of `service` with from <= time < to, containing `grep` when given, in time order.
pub async fn lines(
    op: &Operator,
    service: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    grep: Option<&str>,
) -> anyhow::Result<Vec<(i64, String)>> {
    let (from_ns, to_ns) = (
        from.timestamp_nanos_opt().unwrap_or(i64::MIN),
        to.timestamp_nanos_opt().unwrap_or(i64::MAX),
    );
    let mut out = Vec::new();
    for f in list(op).await? {
        if f.service != service || f.day < from.date_naive() || f.day > to.date_naive() {
            continue;
        }
        let builder = ParquetRecordBatchReaderBuilder::try_new(read(op, &f.path).await?)?;
        let schema = builder.parquet_schema();
        let cols: Vec<usize> = ["timestamp_ns", "line"]
            .iter()
            .filter_map(|name| schema.columns().iter().position(|c| c.name() == *name))
            .collect();
        let mask = ProjectionMask::leaves(schema, cols);
        for batch in builder.with_projection(mask).build()? {
            let batch = batch?;
            let ts = batch
                .column_by_name("timestamp_ns")
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                .ok_or_else(|| anyhow::anyhow!("{}: no timestamp_ns column", f.path))?;
            let line = batch
                .column_by_name("line")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| anyhow::anyhow!("{}: no line column", f.path))?;
            for i in 0..batch.num_rows() {
                let t = ts.value(i);
                if t < from_ns || t >= to_ns || line.is_null(i) {
                    continue;
                }
                let l = line.value(i);
                if grep.is_none_or(|g| l.contains(g)) {
                    out.push((t, l.to_owned()));
                }
            }
        }
    }
    out.sort_by_key(|(t, _)| *t);
    Ok(out)
}

/// Per (env, service, day): files, rows, bytes.
pub fn summarize(files: &[FileInfo]) -> BTreeMap<(String, String, NaiveDate), (usize, i64, u64)> {
    let mut m = BTreeMap::new();
    for f in files {
        let e = m
            .entry((f.env.clone(), f.service.clone(), f.day))
            .or_insert((0, 0, 0));
        e.0 += 1;
        e.1 += f.rows;
        e.2 += f.bytes;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse() {
        let (e, s, d) = parse_path("prod/payment/2025/06/23/163309-1b9d.snappy.parquet").unwrap();
        assert_eq!((e.as_str(), s.as_str()), ("prod", "payment"));
        assert_eq!(d, NaiveDate::from_ymd_opt(2025, 6, 23).unwrap());
        assert!(parse_path("prod/payment/2025/06/23/x.txt").is_none());
        assert!(parse_path("prod/2025/06/23/x.snappy.parquet").is_none());
        assert!(parse_path("a/b/2025/13/40/x.snappy.parquet").is_none());
    }
}

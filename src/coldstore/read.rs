//! Reading the archive back: `alertpipe archive ls` (files per service and day, with rows and
//! bytes) and `alertpipe archive cat` (lines of a service in a time range, in time order).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use arrow_array::{Array, Int64Array, StringArray};
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use opendal::Operator;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader, RowGroupMetaData};
use parquet::file::reader::{ChunkReader, Length};

use super::walk;

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

/// Whether a file name is one of the archive's Parquet files (not a leftover of an interrupted
/// compaction).
pub fn is_data_file(name: &str) -> bool {
    name.ends_with(".snappy.parquet") || name.ends_with(".zstd.parquet")
}

/// Reading a file in parts failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("storage: {0}")]
    Storage(#[from] opendal::Error),
    #[error("{path}: not a Parquet file: {why}")]
    NotParquet { path: String, why: String },
}

/// A file's footer, read alone (its last 8 bytes, then the metadata they point at).
pub struct Footer {
    pub size: u64,
    pub meta: Arc<ParquetMetaData>,
    /// Bytes read to get it.
    pub bytes_read: u64,
}

/// Reads the footer of the file at `path`; None when there is no such file.
pub async fn footer(op: &Operator, path: &str) -> Result<Option<Footer>, ReadError> {
    let size = match op.stat(path).await {
        Ok(m) => m.content_length(),
        Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let bad = |why: &str| ReadError::NotParquet {
        path: path.to_owned(),
        why: why.to_owned(),
    };
    if size < 12 {
        return Err(bad("shorter than a footer"));
    }
    let tail = op.read_with(path).range(size - 8..size).await?.to_vec();
    let len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if &tail[4..] != b"PAR1" || len + 8 > size {
        return Err(bad("no Parquet footer"));
    }
    let buf = op
        .read_with(path)
        .range(size - 8 - len..size - 8)
        .await?
        .to_bytes();
    let meta = ParquetMetaDataReader::decode_metadata(&buf).map_err(|e| bad(&e.to_string()))?;
    Ok(Some(Footer {
        size,
        meta: Arc::new(meta),
        bytes_read: len + 8,
    }))
}

/// The parts of a file a reader needs (column chunks), fetched by range, as a Parquet
/// [`ChunkReader`]: a query reads what its row groups and columns hold, not whole files.
pub struct Sparse {
    size: u64,
    /// (offset, bytes), sorted by offset, not overlapping.
    parts: Vec<(u64, Bytes)>,
}

impl Sparse {
    /// Fetches `ranges` of the file at `path` (of `size` bytes); ranges closer than 64 KiB
    /// are fetched as one.
    pub async fn fetch(
        op: &Operator,
        path: &str,
        size: u64,
        mut ranges: Vec<Range<u64>>,
    ) -> Result<Sparse, ReadError> {
        ranges.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<u64>> = Vec::new();
        for r in ranges {
            match merged.last_mut() {
                Some(last) if r.start <= last.end + (64 << 10) => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        let mut parts = Vec::with_capacity(merged.len());
        for r in merged {
            let start = r.start;
            parts.push((start, op.read_with(path).range(r).await?.to_bytes()));
        }
        Ok(Sparse { size, parts })
    }

    /// Bytes fetched.
    pub fn fetched(&self) -> u64 {
        self.parts.iter().map(|(_, b)| b.len() as u64).sum()
    }

    fn slice(&self, start: u64, len: Option<usize>) -> parquet::errors::Result<Bytes> {
        let i = self.parts.partition_point(|(o, _)| *o <= start);
        let missing =
            || parquet::errors::ParquetError::General(format!("bytes at {start} were not fetched"));
        let (offset, part) = self
            .parts
            .get(i.checked_sub(1).ok_or_else(missing)?)
            .ok_or_else(missing)?;
        let from = (start - offset) as usize;
        let to = len.map_or(part.len(), |l| from + l);
        if to > part.len() {
            return Err(missing());
        }
        Ok(part.slice(from..to))
    }
}

/// What a reader needs of one file: its metadata, the row groups it keeps, and their chunks
/// of the columns it reads.
pub struct Parts {
    pub meta: Arc<ParquetMetaData>,
    pub row_groups: Vec<usize>,
    pub data: Sparse,
    /// Footer and chunks: the bytes read from storage.
    pub bytes_read: u64,
}

impl Parts {
    /// Reads the footer of `path`, then the chunks of the top-level `columns` in the row
    /// groups `keep` admits. None when the file is gone.
    pub async fn fetch(
        op: &Operator,
        path: &str,
        columns: &[&str],
        keep: impl Fn(&RowGroupMetaData) -> bool,
    ) -> Result<Option<Parts>, ReadError> {
        let Some(f) = footer(op, path).await? else {
            return Ok(None);
        };
        let row_groups: Vec<usize> = (0..f.meta.num_row_groups())
            .filter(|&g| keep(f.meta.row_group(g)))
            .collect();
        let mut parts = Parts::of(op, path, &f, columns, row_groups).await?;
        parts.bytes_read += f.bytes_read;
        Ok(Some(parts))
    }

    /// The chunks of the top-level `columns` (all when empty) in `row_groups` of the file
    /// whose footer is `f`.
    pub async fn of(
        op: &Operator,
        path: &str,
        f: &Footer,
        columns: &[&str],
        row_groups: Vec<usize>,
    ) -> Result<Parts, ReadError> {
        let schema = f.meta.file_metadata().schema_descr();
        let leaves: Vec<usize> = (0..schema.num_columns())
            .filter(|&i| columns.is_empty() || columns.contains(&schema.get_column_root(i).name()))
            .collect();
        let ranges = row_groups
            .iter()
            .flat_map(|&g| {
                let rg = f.meta.row_group(g);
                leaves.iter().map(move |&c| {
                    let (start, len) = rg.column(c).byte_range();
                    start..start + len
                })
            })
            .collect();
        let data = Sparse::fetch(op, path, f.size, ranges).await?;
        Ok(Parts {
            bytes_read: data.fetched(),
            meta: f.meta.clone(),
            row_groups,
            data,
        })
    }

    /// A record batch reader over the kept row groups (set its projection to `columns`).
    pub fn builder(self) -> parquet::errors::Result<ParquetRecordBatchReaderBuilder<Sparse>> {
        let meta = ArrowReaderMetadata::try_new(self.meta, ArrowReaderOptions::new())?;
        Ok(
            ParquetRecordBatchReaderBuilder::new_with_metadata(self.data, meta)
                .with_row_groups(self.row_groups),
        )
    }
}

impl Length for Sparse {
    fn len(&self) -> u64 {
        self.size
    }
}

impl ChunkReader for Sparse {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        use bytes::Buf;
        Ok(self.slice(start, None)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, Some(length))
    }
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
    for f in walk::files(op, &walk::Scope::default()).await? {
        if !is_data_file(f.name()) {
            continue;
        }
        // The footer says all a listing needs: a file is never read whole here.
        let Some(footer) = footer(op, &f.path).await? else {
            continue; // gone meanwhile (a compaction's delete)
        };
        let bytes = footer.size;
        let meta = footer.meta.file_metadata();
        let replaces = super::parquet::compacted_from(meta);
        all.push(FileInfo {
            path: f.path,
            env: f.env,
            service: f.service,
            day: f.day,
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
        let Some(parts) = Parts::fetch(op, &f.path, &["timestamp_ns", "line"], |_| true).await?
        else {
            continue;
        };
        let builder = parts.builder()?;
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

//! Encoding buffered log rows as one snappy Parquet file, readable by any Parquet reader:
//! `timestamp` (microseconds, UTC: Spark, Athena and DuckDB cannot read nanosecond
//! timestamps) beside the exact `timestamp_ns`, the line, all labels, structured metadata,
//! and service / env / hostname / level as dictionary-encoded columns. Rows sorted by time.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, Int32Builder, Int64Builder, MapBuilder, StringBuilder, StringDictionaryBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

/// Labels shared by every entry of one pushed stream.
pub type Labels = Arc<BTreeMap<String, String>>;

#[derive(Debug, Clone)]
pub struct Row {
    pub ts_ns: i64,
    pub line: Vec<u8>,
    pub labels: Labels,
    pub metadata: Vec<(String, String)>,
    pub partition: i32,
    pub offset: i64,
}

/// Where a file's rows came from; kept in the footer so a retried flush can recognise the
/// file it is about to overwrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provenance {
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

pub const META_PARTITION: &str = "alertpipe.kafka_partition";
pub const META_FIRST: &str = "alertpipe.kafka_first_offset";
pub const META_LAST: &str = "alertpipe.kafka_last_offset";
/// On a compacted file: the names of the files (same directory) whose rows it holds.
pub const META_COMPACTED_FROM: &str = "alertpipe.compacted_from";
/// On a compaction's temporary file: the name it takes once complete.
pub const META_COMPACTED_NAME: &str = "alertpipe.compacted_name";

pub const PROMOTED: [&str; 4] = ["service", "env", "hostname", "level"];

pub fn schema() -> SchemaRef {
    let map = |name: &str| {
        Field::new(
            name,
            DataType::Map(
                Arc::new(Field::new(
                    "entries",
                    DataType::Struct(
                        vec![
                            Field::new("keys", DataType::Utf8, false),
                            Field::new("values", DataType::Utf8, true),
                        ]
                        .into(),
                    ),
                    false,
                )),
                false,
            ),
            false,
        )
    };
    let dict = |name: &str| {
        Field::new(
            name,
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        )
    };
    Arc::new(Schema::new(vec![
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("timestamp_ns", DataType::Int64, false),
        Field::new("line", DataType::Utf8, false),
        // The exact bytes, only for a line that was not valid UTF-8 (`line` has it lossily).
        Field::new("line_bytes", DataType::Binary, true),
        dict("service"),
        dict("env"),
        dict("hostname"),
        dict("level"),
        map("labels"),
        map("structured_metadata"),
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new("kafka_offset", DataType::Int64, false),
    ]))
}

/// `service` and `env` as the path has them; `hostname` and `level` from labels.
pub struct Promoted<'a> {
    pub service: &'a str,
    pub env: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

pub use crate::config::Codec;

/// The Parquet compression of a codec.
fn compression(codec: Codec) -> Compression {
    match codec {
        Codec::Snappy => Compression::SNAPPY,
        // Level 6: on real logs about 15% smaller than level 3, still well above the
        // stage's 100 MB/s (the benchmark compares with `zstd -3` of the raw lines).
        Codec::Zstd => Compression::ZSTD(parquet::basic::ZstdLevel::try_new(6).unwrap_or_default()),
    }
}

/// [`encode_with`] the default codec.
pub fn encode(
    rows: &mut [Row],
    promoted: &Promoted<'_>,
    provenance: Provenance,
) -> Result<Vec<u8>, EncodeError> {
    encode_with(rows, promoted, provenance, Codec::default())
}

/// Sorts `rows` by time and encodes them as one Parquet file in memory (one row group).
pub fn encode_with(
    rows: &mut [Row],
    promoted: &Promoted<'_>,
    provenance: Provenance,
    codec: Codec,
) -> Result<Vec<u8>, EncodeError> {
    let mut file = FileEncoder::new(codec)?;
    let mut out = file.row_group(rows, promoted)?;
    out.extend_from_slice(&file.finish(provenance)?);
    Ok(out)
}

/// One archive file encoded row group by row group: each call hands back the bytes that are
/// ready for storage, so a file is never held whole in memory (only its open row group).
/// The concatenation of everything returned, in order, is the file.
pub struct FileEncoder {
    writer: ArrowWriter<Vec<u8>>,
}

impl FileEncoder {
    pub fn new(codec: Codec) -> Result<Self, EncodeError> {
        let props = writer_properties(codec)
            .set_created_by("alertpipe".into())
            .build();
        Ok(FileEncoder {
            writer: ArrowWriter::try_new(Vec::new(), schema(), Some(props))?,
        })
    }

    /// Sorts `rows` by time and encodes them as one row group; returns the bytes written.
    pub fn row_group(
        &mut self,
        rows: &mut [Row],
        promoted: &Promoted<'_>,
    ) -> Result<Vec<u8>, EncodeError> {
        if !rows.is_empty() {
            self.writer.write(&batch(rows, promoted)?)?;
            self.writer.flush()?;
        }
        Ok(std::mem::take(self.writer.inner_mut()))
    }

    /// Writes the footer (with the rows' provenance); returns the file's last bytes.
    pub fn finish(mut self, provenance: Provenance) -> Result<Vec<u8>, EncodeError> {
        for (k, v) in [
            (META_PARTITION, provenance.partition.to_string()),
            (META_FIRST, provenance.first_offset.to_string()),
            (META_LAST, provenance.last_offset.to_string()),
        ] {
            self.writer
                .append_key_value_metadata(KeyValue::new(k.into(), v));
        }
        self.writer.finish()?;
        Ok(std::mem::take(self.writer.inner_mut()))
    }
}

/// Sorts `rows` by time and builds their record batch.
fn batch(rows: &mut [Row], promoted: &Promoted<'_>) -> Result<RecordBatch, EncodeError> {
    rows.sort_by_key(|r| (r.ts_ns, r.partition, r.offset));
    let n = rows.len();
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut ts_ns = Int64Builder::with_capacity(n);
    let line_bytes_total: usize = rows.iter().map(|r| r.line.len()).sum();
    let mut line = StringBuilder::with_capacity(n, line_bytes_total);
    let mut raw = BinaryBuilder::new();
    let mut service = StringDictionaryBuilder::<Int32Type>::new();
    let mut env = StringDictionaryBuilder::<Int32Type>::new();
    let mut hostname = StringDictionaryBuilder::<Int32Type>::new();
    let mut level = StringDictionaryBuilder::<Int32Type>::new();
    let mut labels = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    let mut metadata = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    let mut partition = Int32Builder::with_capacity(n);
    let mut offset = Int64Builder::with_capacity(n);
    for r in rows.iter() {
        ts.append_value(r.ts_ns.div_euclid(1000));
        ts_ns.append_value(r.ts_ns);
        match std::str::from_utf8(&r.line) {
            Ok(s) => {
                line.append_value(s);
                raw.append_null();
            }
            Err(_) => {
                line.append_value(String::from_utf8_lossy(&r.line));
                raw.append_value(&r.line);
            }
        }
        service.append_value(promoted.service);
        env.append_value(promoted.env);
        match r.labels.get("hostname") {
            Some(h) => hostname.append_value(h),
            None => hostname.append_null(),
        }
        match r
            .labels
            .get("level")
            .or_else(|| r.labels.get("detected_level"))
        {
            Some(l) => level.append_value(l),
            None => level.append_null(),
        }
        for (k, v) in r.labels.iter() {
            labels.keys().append_value(k);
            labels.values().append_value(v);
        }
        labels.append(true)?;
        for (k, v) in &r.metadata {
            metadata.keys().append_value(k);
            metadata.values().append_value(v);
        }
        metadata.append(true)?;
        partition.append_value(r.partition);
        offset.append_value(r.offset);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ts.finish()),
        Arc::new(ts_ns.finish()),
        Arc::new(line.finish()),
        Arc::new(raw.finish()),
        Arc::new(service.finish()),
        Arc::new(env.finish()),
        Arc::new(hostname.finish()),
        Arc::new(level.finish()),
        Arc::new(labels.finish()),
        Arc::new(metadata.finish()),
        Arc::new(partition.finish()),
        Arc::new(offset.finish()),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

/// How each column is stored, chosen on real logs (`benches/archive_size.rs`):
/// - `line`: DELTA_BYTE_ARRAY (each line stored as its shared prefix with the one before plus
///   the rest: log lines of one stream share timestamps, hosts and templates), no dictionary
///   (lines rarely repeat whole). About 1.6x smaller than plain under snappy, 1.3x under zstd.
///   No min/max statistics: no reader prunes free text by them (the planner uses time,
///   `hostname` and `level`), and comparing every line with the page's min and max cost 5% of
///   the encoder's time (`cargo bench --bench archive`, stage alone: 142 -> 148 MB/s).
/// - times and offsets: DELTA_BINARY_PACKED (nearly constant steps pack to a few bits).
/// - everything else keeps the dictionary (services, levels, label maps repeat on every row).
pub(crate) fn writer_properties(
    codec: Codec,
) -> parquet::file::properties::WriterPropertiesBuilder {
    use parquet::basic::Encoding;
    use parquet::file::properties::EnabledStatistics;
    use parquet::schema::types::ColumnPath;
    let mut b = WriterProperties::builder()
        .set_compression(compression(codec))
        .set_column_dictionary_enabled(ColumnPath::from("line"), false)
        .set_column_encoding(ColumnPath::from("line"), Encoding::DELTA_BYTE_ARRAY)
        .set_column_statistics_enabled(ColumnPath::from("line"), EnabledStatistics::None);
    for col in ["timestamp", "timestamp_ns", "kafka_offset"] {
        b = b
            .set_column_dictionary_enabled(ColumnPath::from(col), false)
            .set_column_encoding(ColumnPath::from(col), Encoding::DELTA_BINARY_PACKED);
    }
    b
}

/// The names (same directory) of the files a compacted file's rows come from; empty for
/// any other file.
pub fn compacted_from(meta: &parquet::file::metadata::FileMetaData) -> Vec<String> {
    meta.key_value_metadata()
        .and_then(|kv| kv.iter().find(|e| e.key == META_COMPACTED_FROM))
        .and_then(|e| e.value.as_deref())
        .map(|v| {
            v.split(',')
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Reads a file's provenance from its footer (None for files not written by alertpipe).
pub fn provenance(file: bytes::Bytes) -> Option<Provenance> {
    use parquet::file::reader::FileReader;
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(file).ok()?;
    provenance_in(reader.metadata().file_metadata())
}

/// The provenance a file's footer metadata holds (None for files not written by alertpipe).
pub fn provenance_in(meta: &parquet::file::metadata::FileMetaData) -> Option<Provenance> {
    let kv = meta.key_value_metadata()?;
    let get = |k: &str| {
        kv.iter()
            .find(|e| e.key == k)
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.parse::<i64>().ok())
    };
    Some(Provenance {
        partition: get(META_PARTITION)? as i32,
        first_offset: get(META_FIRST)?,
        last_offset: get(META_LAST)?,
    })
}

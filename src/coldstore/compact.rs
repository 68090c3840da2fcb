//! `alertpipe archive compact`: merges a closed day's small files per `env/service/day` into
//! one large file, through OpenDAL (local disk, HDFS, S3).
//!
//! Steps per directory, each safe to crash after:
//! 1. the inputs' rows are streamed, row group by row group, into a local temporary file,
//!    then uploaded in chunks (multipart where the store has it) as `_compacting-<id>.tmp`
//!    in the same directory: no `.parquet` name, so no reader sees it;
//! 2. it is renamed to its final name `<HHMMSS>-<8 hex>.<codec>.parquet`, whose footer lists
//!    the inputs (`alertpipe.compacted_from`) (copied where the store cannot rename, and
//!    rewritten through the atomic writer where it can do neither: WebHDFS);
//! 3. the inputs are deleted.
//!
//! A crash in 1 leaves a temporary file without a footer: the next run deletes it and starts
//! over. After 1, the next run finishes 2 and 3 from the footer. Between 2 and 3 the inputs
//! and the compacted file exist together: alertpipe's readers (`read::list`) skip inputs a
//! compacted file names, so they never see a row twice; a reader globbing `*.parquet` itself
//! would for those milliseconds (or until the next run, after a crash there).
//! Memory: one input file and one row group at a time, never the whole output.

use std::collections::BTreeMap;
use std::io::{Read, Seek};

use chrono::NaiveDate;
use opendal::Operator;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;

use super::parquet::{writer_properties, Codec, META_COMPACTED_FROM, META_COMPACTED_NAME};
use super::read::{list_all, FileInfo};
use super::walk;

/// Rows per row group of a compacted file: the unit a reader skips by statistics, and what
/// the writer holds in memory.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;
const UPLOAD_CHUNK: usize = 8 << 20;

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CompactReport {
    /// Directories (env/service/day) merged.
    pub merged: usize,
    pub files_before: usize,
    pub files_after: usize,
    pub rows: i64,
    /// Leftovers of an interrupted run that were finished or cleaned up.
    pub recovered: usize,
}

/// Compacts every `env/service/day` before `before` that has more than one file.
pub async fn compact(
    op: &Operator,
    before: NaiveDate,
    codec: Codec,
) -> anyhow::Result<CompactReport> {
    let mut report = CompactReport {
        recovered: finish_interrupted(op).await?,
        ..Default::default()
    };
    let mut groups: BTreeMap<String, Vec<FileInfo>> = BTreeMap::new();
    for f in list_all(op).await?.0 {
        if f.day < before {
            groups.entry(f.dir().to_owned()).or_default().push(f);
        }
    }
    for (dir, files) in groups {
        if files.len() < 2 {
            continue;
        }
        report.files_before += files.len();
        report.rows += merge(op, &dir, &files, codec).await?;
        report.files_after += 1;
        report.merged += 1;
    }
    Ok(report)
}

/// 8 hex digits from the inputs' names: the same inputs always give the same file.
fn id_of(names: &[&str]) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for n in names {
        for b in n.bytes().chain([b',']) {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    format!("{h:08x}")
}

/// Streams `files` into one file in `dir`; returns its rows.
async fn merge(op: &Operator, dir: &str, files: &[FileInfo], codec: Codec) -> anyhow::Result<i64> {
    let names: Vec<&str> = files.iter().map(FileInfo::name).collect();
    let id = id_of(&names);
    // Inputs are named <HHMMSS>-...: the earliest start names the result.
    let hhmmss = names
        .iter()
        .filter_map(|n| n.get(..6))
        .min()
        .unwrap_or("000000");
    let final_name = format!("{hhmmss}-{id}.{}", codec.extension());
    let tmp = format!("{dir}/_compacting-{id}.tmp");
    let props = writer_properties(codec)
        .set_max_row_group_size(ROW_GROUP_ROWS)
        .set_created_by("alertpipe compact".into())
        .set_key_value_metadata(Some(vec![
            KeyValue::new(META_COMPACTED_FROM.into(), names.join(",")),
            KeyValue::new(META_COMPACTED_NAME.into(), final_name.clone()),
        ]))
        .build();
    let local = scratch_file(&id)?;
    let mut writer = ArrowWriter::try_new(local, super::parquet::schema(), Some(props))?;
    let mut rows = 0i64;
    // One input row group in memory at a time (ranged reads), however large the inputs.
    for f in files {
        let footer = super::read::footer(op, &f.path)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{} disappeared during compaction", f.path))?;
        for g in 0..footer.meta.num_row_groups() {
            let parts = super::read::Parts::of(op, &f.path, &footer, &[], vec![g]).await?;
            for batch in parts.builder()?.with_batch_size(8192).build()? {
                let batch = batch?;
                rows += batch.num_rows() as i64;
                writer.write(&batch)?;
            }
        }
    }
    let mut local = writer.into_inner()?;
    local.rewind()?;
    upload(op, &tmp, local).await?;
    publish(op, dir, &tmp, &final_name, &names).await?;
    tracing::info!(dir, file = %final_name, inputs = names.len(), rows, "archive compacted");
    Ok(rows)
}

/// A local file for the output, unlinked at once: it disappears with the process.
fn scratch_file(id: &str) -> std::io::Result<std::fs::File> {
    let path = std::env::temp_dir().join(format!(
        "alertpipe-compact-{}-{id}.parquet",
        std::process::id()
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

/// Copies a local file to `path` in chunks (multipart uploads where the store has them).
async fn upload(op: &Operator, path: &str, mut local: std::fs::File) -> anyhow::Result<()> {
    let mut w = op.writer_with(path).chunk(UPLOAD_CHUNK).await?;
    let mut buf = vec![0u8; UPLOAD_CHUNK];
    loop {
        let n = local.read(&mut buf)?;
        if n == 0 {
            break;
        }
        w.write(buf[..n].to_vec()).await?;
    }
    w.close().await?;
    Ok(())
}

/// Steps 2 and 3: the complete temporary file takes its name, then the inputs go.
async fn publish(
    op: &Operator,
    dir: &str,
    tmp: &str,
    final_name: &str,
    inputs: &[&str],
) -> anyhow::Result<()> {
    let target = format!("{dir}/{final_name}");
    let cap = op.info().full_capability();
    if cap.rename {
        op.rename(tmp, &target).await?;
    } else if cap.copy {
        op.copy(tmp, &target).await?;
        op.delete(tmp).await?;
    } else {
        // WebHDFS through OpenDAL has neither: the bytes go again, through the writer, which
        // on HDFS stages them under `.incomplete/` and renames them into place whole.
        let size = op.stat(tmp).await?.content_length();
        let reader = op.reader(tmp).await?;
        let mut w = op.writer_with(&target).chunk(UPLOAD_CHUNK).await?;
        let mut at = 0u64;
        while at < size {
            let end = (at + UPLOAD_CHUNK as u64).min(size);
            w.write(reader.read(at..end).await?).await?;
            at = end;
        }
        w.close().await?;
        op.delete(tmp).await?;
    }
    for name in inputs {
        if *name != final_name {
            op.delete(&format!("{dir}/{name}")).await?;
        }
    }
    Ok(())
}

/// Finishes or cleans up what an interrupted run left: complete temporary files are published,
/// partial ones deleted, inputs still beside their compacted file deleted.
async fn finish_interrupted(op: &Operator) -> anyhow::Result<usize> {
    let mut n = 0;
    let tmps: Vec<String> = walk::files(op, &walk::Scope::default())
        .await?
        .into_iter()
        .filter(|f| f.name().starts_with("_compacting-") && f.name().ends_with(".tmp"))
        .map(|f| f.path)
        .collect();
    for tmp in tmps {
        n += 1;
        let dir = tmp.rsplit_once('/').map_or("", |(d, _)| d).to_owned();
        let data = op.read(&tmp).await?.to_bytes();
        let meta = ParquetRecordBatchReaderBuilder::try_new(data)
            .ok()
            .and_then(|b| b.metadata().file_metadata().key_value_metadata().cloned());
        let get = |k: &str| {
            meta.as_ref()
                .and_then(|kv| kv.iter().find(|e| e.key == k))
                .and_then(|e| e.value.clone())
        };
        match (get(META_COMPACTED_NAME), get(META_COMPACTED_FROM)) {
            (Some(name), Some(from)) => {
                tracing::info!(file = %tmp, "finishing an interrupted compaction");
                let inputs: Vec<&str> = from.split(',').filter(|s| !s.is_empty()).collect();
                let present = present_inputs(op, &dir, &inputs).await?;
                let present: Vec<&str> = present.iter().map(String::as_str).collect();
                publish(op, &dir, &tmp, &name, &present).await?;
            }
            _ => {
                tracing::info!(file = %tmp, "deleting an incomplete compaction file");
                op.delete(&tmp).await?;
            }
        }
    }
    for f in list_all(op).await?.1 {
        tracing::info!(file = %f.path, "deleting a file its compacted file replaces");
        op.delete(&f.path).await?;
        n += 1;
    }
    Ok(n)
}

async fn present_inputs(op: &Operator, dir: &str, inputs: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for name in inputs {
        if op.exists(&format!("{dir}/{name}")).await? {
            out.push((*name).to_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_inputs_give_the_same_id() {
        assert_eq!(id_of(&["a", "b"]), id_of(&["a", "b"]));
        assert_ne!(id_of(&["a", "b"]), id_of(&["a", "c"]));
        assert_ne!(id_of(&["ab"]), id_of(&["a", "b"]));
        assert_eq!(id_of(&["x"]).len(), 8);
    }
}

//! The bookkeeping's rules, without an actor or storage.

use std::collections::BTreeMap;

use super::*;
use crate::archive::push::Entry;

pub const DAY_NS: i64 = 1_782_000_000_000_000_000; // 2026-06-21

pub fn settings() -> ArchiveSettings {
    ArchiveSettings {
        default_env: "prod".into(),
        max_file_bytes: 1 << 30,
        max_age: Duration::from_secs(3600),
        codec: pq::Codec::Snappy,
        row_group_bytes: 4096,
        buffer_bytes: 16 * 1024,
        encode_threads: 2,
    }
}

/// `n` messages on partition 0 from `first`, each one stream of 10 lines of `service`.
pub fn messages(service: &str, first: i64, n: i64) -> Arc<Vec<Decoded<Stream>>> {
    let labels = BTreeMap::from([("service".to_owned(), service.to_owned())]);
    Arc::new(
        (first..first + n)
            .map(|offset| Decoded {
                topic: "logs".into(),
                partition: 0,
                offset,
                item: Stream {
                    labels: labels.clone(),
                    entries: (0..10)
                        .map(|i| Entry {
                            ts_ns: DAY_NS + offset * 1000 + i,
                            line: format!("{service} line {offset}.{i} payment accepted")
                                .into_bytes(),
                            metadata: Vec::new(),
                        })
                        .collect(),
                },
            })
            .collect(),
    )
}

fn tp0() -> TopicPartition {
    TopicPartition::new("logs", 0)
}

fn commit_at(o: i64) -> Offsets {
    [(tp0(), o)].into_iter().collect()
}

#[test]
fn the_commit_is_the_open_epochs_first_offset_until_its_files_close() {
    let mut e = Epochs::new(settings());
    assert!(e.commits().is_empty(), "nothing read, nothing to commit");
    e.add(&messages("payment", 5, 10), 1).unwrap();
    assert_eq!(e.commits(), commit_at(5), "open epoch starts at 5");
    assert!(!e.pending_in(&messages("payment", 5, 10), 1));
    e.closed(&tp0());
    assert_eq!(
        e.commits(),
        commit_at(15),
        "closed: past everything buffered"
    );
    // A redelivery of what is already in closed files is skipped.
    e.add(&messages("payment", 5, 10), 2).unwrap();
    assert_eq!(e.commits(), commit_at(15));
    assert!(e.files_of(&tp0()).is_empty());
}

#[test]
fn a_new_day_stops_the_batch_to_close_the_epoch_first() {
    let mut e = Epochs::new(settings());
    e.add(&messages("payment", 0, 3), 1).unwrap();
    let mut next_day = (*messages("payment", 3, 1)).clone();
    for en in &mut next_day[0].item.entries {
        en.ts_ns += 86_400_000_000_000;
    }
    assert_eq!(e.add(&next_day, 2), Err(Stop::Close(tp0())));
    assert!(e.pending_in(&next_day, 2), "the new day's message waits");
    let files = e.files_of(&tp0());
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].dataset.service, "payment");
    assert_eq!(files[0].dataset.env, "prod");
}

#[test]
fn row_groups_are_due_at_their_size_and_the_memory_budget_holds() {
    let mut e = Epochs::new(settings());
    // 2,000 lines of ~40 bytes: far past the 16 KiB budget.
    assert_eq!(e.add(&messages("payment", 0, 200), 1), Err(Stop::Memory));
    let due = e.row_groups_due(&[]);
    assert_eq!(due.len(), 1, "one open file, past its row group size");
    let job = e.encode(&due[0], false).unwrap().unwrap();
    assert!(job.close.is_none(), "a row group, not a closed file");
    assert_eq!(e.held(), 0, "encoded rows leave the budget");
    assert_eq!(job.name.first_offset, 0);
}

#[test]
fn a_rewound_partition_ignores_the_rest_of_the_batch_and_reads_from_the_epoch_start() {
    let mut e = Epochs::new(settings());
    e.add(&messages("payment", 10, 5), 1).unwrap();
    assert_eq!(e.rewind(&tp0(), 2), Some(10));
    e.add(&messages("payment", 15, 5), 2).unwrap();
    assert_eq!(
        e.commits(),
        commit_at(10),
        "read again from the epoch's start"
    );
    assert!(
        e.files_of(&tp0()).is_empty(),
        "batch 2's messages were ignored"
    );
    // Read again, in a later batch: buffered from the epoch's start.
    e.add(&messages("payment", 10, 10), 3).unwrap();
    assert_eq!(e.commits(), commit_at(10));
}

#[test]
fn a_partition_that_comes_back_keeps_its_epochs_age() {
    let mut e = Epochs::new(ArchiveSettings {
        max_age: Duration::from_millis(50),
        ..settings()
    });
    e.add(&messages("payment", 0, 2), 1).unwrap();
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(e.forget(&tp0()), Some(20));
    assert!(e.due_by_age().is_empty(), "forgotten");
    e.add(&messages("payment", 0, 2), 2).unwrap();
    assert_eq!(
        e.due_by_age(),
        vec![tp0()],
        "the same epoch read again is as old"
    );
}

#[test]
fn files_encoded_side_by_side_come_back_in_order_with_the_bytes_of_one_by_one() {
    let services = ["payment", "checkout", "auth", "search", "inventory"];
    let encoded = |threads: usize| {
        let mut e = Epochs::new(settings());
        for (i, svc) in services.iter().enumerate() {
            // Different sizes, so the largest-first order differs from the given one.
            let n = 3 + 4 * i as i64;
            let _ = e.add(&messages(svc, 100 * i as i64, n), i as u64 + 1);
        }
        let files = e.files_of(&tp0());
        assert_eq!(files.len(), services.len());
        let works: Vec<Encoding> = files.iter().filter_map(|f| e.take(f, true)).collect();
        assert_eq!(e.held(), 0, "taken rows leave the budget");
        let out = encode_all(works, threads);
        let keys: Vec<FileKey> = out.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, files, "answered in the order given");
        out.into_iter()
            .map(|(_, r)| {
                let (job, encoder) = r.expect("encoded");
                assert!(encoder.is_none(), "a closed file keeps no encoder");
                assert!(job.close.is_some());
                job.bytes
            })
            .collect::<Vec<_>>()
    };
    let one = encoded(1);
    assert!(one
        .iter()
        .all(|b| b.starts_with(b"PAR1") && b.ends_with(b"PAR1")));
    assert_eq!(encoded(3), one, "side by side, the same files");
}

#[test]
fn an_open_file_gets_its_encoder_back_and_its_next_row_group_continues_the_file() {
    let mut e = Epochs::new(settings());
    // Past the row group size (4 KiB), within the budget (16 KiB).
    e.add(&messages("payment", 0, 5), 1).unwrap();
    let file = e.row_groups_due(&[]).remove(0);
    let work = e.take(&file, false).expect("an open row group");
    let mut out = encode_all(vec![work], 2);
    let (job, encoder) = out.remove(0).1.expect("encoded");
    assert!(job.close.is_none() && encoder.is_some());
    e.restore(&file, encoder);
    e.add(&messages("payment", 200, 5), 2).unwrap();
    let last = e
        .encode(&file, true)
        .unwrap()
        .expect("the rest and the footer");
    // One file: both row groups, every line.
    let mut bytes = job.bytes;
    bytes.extend_from_slice(&last.bytes);
    let reader = parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(bytes))
        .expect("one parquet file");
    use parquet::file::reader::FileReader;
    let meta = reader.metadata();
    assert_eq!(meta.num_row_groups(), 2);
    assert_eq!(meta.file_metadata().num_rows(), 100);
}

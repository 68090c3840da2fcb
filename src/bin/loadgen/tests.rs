use super::*;

#[test]
fn open_loop_senders_share_the_offered_rate() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadgenArgs,
    }
    let parse = |extra: &[&str]| {
        let argv = ["loadgen", "--concurrency", "8", "-b", "50"]
            .iter()
            .chain(extra);
        Cli::parse_from(argv).args
    };
    // 8 senders x 50 alerts every 40 ms = 10,000 alerts/s, for alertpipe and baseline alike.
    let open = parse(&["--rate", "10000"]);
    assert_eq!(open_loop_period(&open), Some(Duration::from_millis(40)));
    let start = Instant::now();
    let period = open_loop_period(&open);
    assert_eq!(
        next_slot(start, period, 25).map(|t| t - start),
        Some(Duration::from_secs(1))
    );
    assert_eq!(open_loop_period(&parse(&[])), None);
}

#[actix_web::test]
async fn a_schedule_gives_each_slot_until_the_deadline_then_ends() {
    let start = Instant::now();
    let mut open = Schedule::new(
        start,
        Some(Duration::from_millis(1)),
        0,
        Duration::from_millis(3),
    );
    let mut slots = Vec::new();
    while let Some(slot) = open.next().await {
        slots.push(slot.map(|t| t - start));
    }
    let ms = Duration::from_millis;
    assert_eq!(slots, vec![Some(ms(0)), Some(ms(1)), Some(ms(2))]);
    // Closed loop: turns at once, counted from when the batch is sent, until the deadline.
    let mut closed = Schedule::new(Instant::now(), None, 3, Duration::from_secs(60));
    assert_eq!(closed.next().await, Some(None));
    let mut over = Schedule::new(Instant::now(), None, 0, Duration::ZERO);
    assert_eq!(over.next().await, None);
}

#[test]
fn generated_bodies_are_valid_and_unique() {
    let mut seq = 0;
    let a = parse_webhook(&webhook_body(&mut seq, 3)).unwrap();
    let b = parse_webhook(&webhook_body(&mut seq, 3)).unwrap();
    assert_eq!(a.len(), 3);
    let mut keys: Vec<_> = a.iter().chain(&b).map(|e| e.dedup_key()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 6);
}

#[test]
fn a_run_with_failures_fails_the_benchmark() {
    let ok = RunResult {
        alerts: 100,
        latencies: vec![Duration::from_millis(1); 2],
        ..RunResult::default()
    };
    assert!(verdict(std::slice::from_ref(&ok)).is_ok());
    let failing = RunResult {
        errors: 212_568,
        ..RunResult::default()
    };
    assert!(verdict(&[ok, failing]).is_err());
}

#[test]
fn percentile_and_median() {
    let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
    assert_eq!(percentile(&v, 0.5), Duration::from_millis(51));
    assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
    assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
}

/// clap checks a definition only when parsing in debug builds: check it in the tests.
#[test]
fn the_flags_are_a_valid_cli_definition() {
    use clap::CommandFactory;
    super::LoadgenArgs::command().debug_assert();
}

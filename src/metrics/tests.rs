use super::*;

#[test]
fn every_name_is_prefixed_and_follows_the_conventions() {
    let text = Metrics::new().encode();
    let mut families = 0;
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line.split_whitespace().skip(2);
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        families += 1;
        assert!(
            name.starts_with("tickrelay_") || name.starts_with("process_"),
            "{name} lacks the tickrelay_ prefix"
        );
        assert!(!name.starts_with("tickrelay_process_"), "{name}");
        // Counters get `_total` from the encoder, never in their name.
        assert!(!name.ends_with("_total"), "{name}");
        if kind == "histogram" {
            assert!(
                name.ends_with("_seconds"),
                "{name}: histograms are in seconds"
            );
        }
    }
    assert!(families >= 30, "only {families} families");
    for sample in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "tickrelay_feed_packets_received_total{line=\"a\"}",
        "tickrelay_feed_decode_errors_total{reason=\"bad_msgpack\"} 0",
        "tickrelay_limit_refusals_total{limit=\"max_symbols\"} 0",
        "tickrelay_slow_client_disconnects_total{transport=\"ws\",reason=\"no_pong\"} 0",
        "tickrelay_tick_to_write_seconds_bucket{le=\"0.00001\",transport=\"ws\"} 0",
        "tickrelay_user_connections{class=\"none\",delayed=\"false\"} 0",
        "tickrelay_user_deliveries_total{class=\"nonpro\",delayed=\"true\"} 0",
    ] {
        if sample.starts_with("process_") && !cfg!(target_os = "linux") {
            continue;
        }
        assert!(text.contains(sample), "{sample} missing from:\n{text}");
    }
    assert!(text.contains("tickrelay_build_info{version=\""));
    assert!(text.ends_with("# EOF\n"));
}

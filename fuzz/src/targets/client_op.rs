//! The `client_op` target.

use rand::Rng;
use rand::rngs::SmallRng;
use tickrelay::wire::Session;

use super::sig;
use crate::engine::Target;

/// `client_op`: WebSocket client operations, JSON and MessagePack, decoded
/// as the `/v1/ws` handler decodes them (`ClientOp` from serde_json or
/// rmp-serde) and then checked as it checks them (symbol list, mode and
/// `max_hz`, resume token).
///
/// Invariant: never a panic.
pub struct ClientOpTarget;

impl Target for ClientOpTarget {
    fn name(&self) -> &'static str {
        "client_op"
    }

    fn generate(&mut self, rng: &mut SmallRng) -> Vec<u8> {
        use serde_json::{Value, json};
        let symbols: Vec<Value> = (0..rng.gen_range(0..5))
            .map(|_| {
                json!(
                    ["AAPL", "*", "", "msft", "<x>", "ABCDEFGHIJKLMNOPQR", "A,B"]
                        [rng.gen_range(0..7)]
                )
            })
            .collect();
        let max_hz = [
            json!(null),
            json!(1),
            json!(0),
            json!(-1),
            json!(1e-300),
            json!(1e300),
            json!(0.5),
            json!("10"),
        ][rng.gen_range(0..8)]
        .clone();
        let name = ["subscribe", "nope", "SUBSCRIBE"][rng.gen_range(0..3)];
        let mode = ["conflate", "every", "", "EVERY"][rng.gen_range(0..4)];
        let since = ["S1:42", "S1:", ":", "S1:18446744073709551616", "x"][rng.gen_range(0..5)];
        let op = match rng.gen_range(0..5) {
            0 => json!({"op": "ping"}),
            1 => json!({"op": "unsubscribe", "symbols": symbols}),
            2 => json!({"op": name, "symbols": symbols}),
            _ => json!({
                "op": "subscribe",
                "symbols": symbols,
                "mode": mode,
                "max_hz": max_hz,
                "since": since,
            }),
        };
        // Half JSON text, half MessagePack binary (as maps, like browsers send).
        if rng.r#gen() {
            serde_json::to_vec(&op).unwrap_or_default()
        } else {
            let mut out = vec![0xB1]; // marks MessagePack for `run`
            out.extend(rmp_serde::to_vec_named(&op).unwrap_or_default());
            out
        }
    }

    fn run(&mut self, input: &[u8]) -> u64 {
        use tickrelay::transport::ws::ClientOp;
        // Both decoders see every input; the marker only shapes generation.
        let body = input.strip_prefix(&[0xB1]).unwrap_or(input);
        let json = serde_json::from_slice::<ClientOp>(body);
        let msgpack = rmp_serde::from_slice::<ClientOp>(body);
        let mut s = vec![u64::from(json.is_ok()), u64::from(msgpack.is_ok())];
        for op in [json.ok(), msgpack.ok()].into_iter().flatten() {
            s.push(check_op(op));
        }
        sig(&s)
    }
}

/// The checks `/v1/ws` makes on a decoded operation.
fn check_op(op: tickrelay::transport::ws::ClientOp) -> u64 {
    use tickrelay::transport::subscriptions::{resume_point, sub_options};
    use tickrelay::transport::ws::ClientOp;
    match op {
        ClientOp::Ping => 1,
        // A refreshed token goes through the same verification as a new
        // connection's: any string is refused or accepted, never a panic.
        ClientOp::Auth { token } => 16 + u64::from(verifier().verify(&token).is_ok()),
        ClientOp::Unsubscribe { symbols, .. } => {
            2 + u64::from(tickrelay::api::parse_symbol_list(&symbols, 100).is_ok())
        }
        ClientOp::Subscribe {
            symbols,
            mode,
            max_hz,
            since,
            depth,
            ..
        } => {
            // A book's depth of any JSON shape: a number or bad_depth.
            let depth = tickrelay::transport::bookstream::depth_of(depth.as_ref()).is_ok();
            let list = tickrelay::api::parse_symbol_list(&symbols, 100).is_ok();
            // A positive max_hz below about 5e-20 (1e-300, say) once made
            // `SubOptions::new` overflow a Duration; it is refused now
            // (reproducer: fuzz/corpus/client_op/known-tiny-max-hz.json).
            let opts = sub_options(mode.as_deref(), max_hz).is_ok();
            // A quote resume point is `SESSION:SEQ`; a trades `since` a
            // sequence or that, any other shape refused.
            let token = since.as_ref().and_then(|v| v.as_str());
            let resume = resume_point(token, Session::new("S1")).is_some();
            if let Some(raw) = token {
                let _ = tickrelay::transport::chartstream::since_of(raw, "S1");
            }
            8 + u64::from(list)
                + 2 * u64::from(opts)
                + 4 * u64::from(resume)
                + 32 * u64::from(depth)
        }
    }
}

/// An HS256 verifier over a fixed secret, loaded once from a file as the
/// relay loads its own.
fn verifier() -> &'static tickrelay::auth::Verifier {
    static V: std::sync::OnceLock<tickrelay::auth::Verifier> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("tickrelay-fuzz-secret-{}", std::process::id()));
        std::fs::write(&path, b"fuzz-secret-fuzz-secret-fuzz-secret!")
            .expect("write the fuzz secret");
        let settings = tickrelay::auth::JwtSettings {
            secret_file: Some(path),
            ..Default::default()
        };
        tickrelay::auth::Verifier::load(&settings)
            .expect("a valid secret")
            .expect("a verifier")
    })
}

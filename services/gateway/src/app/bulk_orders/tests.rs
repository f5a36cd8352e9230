//! Unit tests of the intake: NDJSON splitting, chunks, structural checks.

use super::intake_ndjson::*;
use super::*;

fn lines(input: &[&[u8]]) -> Result<Vec<(usize, String)>, ApiError> {
    let mut splitter = LineSplitter::new(1 << 20);
    let mut out = Vec::new();
    let mut each = |line: usize, text: &str| {
        out.push((line, text.to_owned()));
        Ok(())
    };
    for frame in input {
        splitter.feed(frame, &mut each)?;
    }
    splitter.finish(&mut each)?;
    Ok(out)
}

/// Lines split across frames are joined; blank lines and CRLF are tolerated; the
/// last line needs no newline; line numbers count every physical line.
#[test]
fn ndjson_lines_are_split_across_frames() {
    let got = lines(&[b"{\"a\":1}\r\n\n{\"b\"", b":2}\n  \n{\"c\":3}"]).unwrap();
    assert_eq!(
        got,
        vec![
            (1, "{\"a\":1}".to_owned()),
            (3, "{\"b\":2}".to_owned()),
            (5, "{\"c\":3}".to_owned())
        ]
    );
}

/// A line that is not JSON refuses the batch and names the line.
#[test]
fn a_malformed_line_is_named() {
    let err = lines(&[b"{\"a\":1}\n{nope\n"]).unwrap_err();
    assert_eq!(err.code(), "malformed_body");
    assert!(err.to_string().contains("line 2"), "{err}");
}

/// The body limit and the per-line limit are enforced while streaming.
#[test]
fn limits_are_enforced_while_streaming() {
    let mut splitter = LineSplitter::new(10);
    let mut each = |_: usize, _: &str| Ok(());
    assert_eq!(
        splitter
            .feed(b"{\"a\":12345678}\n", &mut each)
            .unwrap_err()
            .code(),
        "payload_too_large"
    );
    let mut splitter = LineSplitter::new(u64::MAX);
    let long = vec![b'x'; MAX_ORDER_BYTES + 1];
    assert_eq!(
        splitter.feed(&long, &mut each).unwrap_err().code(),
        "payload_too_large"
    );
}

/// Chunks hold 1,000 orders each, numbered from 0, and the hash covers every order
/// whether or not it is stored.
#[test]
fn chunks_are_built_from_raw_orders() {
    let mut stored = ChunkWriter::new(true);
    let mut hashed = ChunkWriter::new(false);
    for i in 0..2_500 {
        let raw = format!("{{\"i\":{i}}}");
        stored.push(&raw);
        hashed.push(&raw);
    }
    stored.close_chunk();
    assert_eq!(stored.ready_indexes, vec![0, 1, 2]);
    assert_eq!(stored.ready_firsts, vec![0, 1000, 2000]);
    let last: Vec<serde_json::Value> = serde_json::from_str(&stored.ready_orders[2]).unwrap();
    assert_eq!(last.len(), 500);
    assert_eq!(last[0]["i"], 2000);
    assert!(hashed.ready_orders.is_empty());
    assert_eq!(stored.finish_hash(), hashed.finish_hash());
}

/// Structure checks: objects only, no NUL; idempotency keys are visible ASCII.
#[test]
fn structural_checks() {
    assert!(check_order_structure("{}", || "/orders/0".into()).is_ok());
    assert!(check_order_structure("[1]", || "/orders/0".into()).is_err());
    assert!(check_order_structure(r#"{"a":"\u0000"}"#, || "/orders/0".into()).is_err());
    assert!(check_idempotency_key(Some("key-1")).is_ok());
    assert!(check_idempotency_key(None).is_ok());
    assert!(check_idempotency_key(Some("")).is_err());
    assert!(check_idempotency_key(Some("has space")).is_err());
}

/// Property tests of NDJSON line splitting, the parser every streamed upload
/// goes through.
mod properties {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};

    use super::*;

    /// Fixed seed unless `PROPTEST_RNG_SEED` is set; no regression files.
    fn config(cases: u32) -> Config {
        let default = Config::default();
        Config {
            cases: std::env::var_os("PROPTEST_CASES").map_or(cases, |_| default.cases),
            rng_seed: match default.rng_seed {
                RngSeed::Random => RngSeed::Fixed(0x4E44_4A53),
                fixed => fixed,
            },
            failure_persistence: None,
            ..default
        }
    }

    /// `body` cut into frames at `cuts` (positions taken modulo its length).
    fn frames(body: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut at: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        at.sort_unstable();
        let mut out = Vec::new();
        let mut start = 0;
        for cut in at.into_iter().chain([body.len()]) {
            out.push(body[start..cut].to_vec());
            start = cut;
        }
        out
    }

    /// The lines, or the error code, of a body fed in `frames`.
    fn split(frames: &[Vec<u8>]) -> Result<Vec<(usize, String)>, &'static str> {
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        lines(&refs).map_err(|e| e.code())
    }

    proptest! {
        #![proptest_config(config(256))]

        /// Any bytes, in any framing, are split or refused without panicking,
        /// and the outcome does not depend on where the frames end.
        #[test]
        fn any_body_in_any_framing_gives_the_same_outcome(
            body in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..300),
                "([{}\\[\\]\":,0-9a-z \\r\\t]{0,20}\n){0,8}".prop_map(String::into_bytes),
            ],
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let whole = split(std::slice::from_ref(&body));
            if let Err(code) = whole {
                prop_assert!(matches!(code, "malformed_body" | "payload_too_large"), "{}", code);
            }
            prop_assert_eq!(split(&frames(&body, &cuts)), whole);
        }

        /// JSON objects written one per line, with CRLF endings, blank lines and
        /// no final newline mixed in, come back in order, each numbered by its
        /// physical line.
        #[test]
        fn objects_come_back_line_by_line(
            objects in prop::collection::vec(
                prop::collection::btree_map("[a-z]{1,6}", ".{0,12}", 0..4),
                1..12,
            ),
            endings in prop::collection::vec(0usize..4, 12),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut body = String::new();
            let mut expected = Vec::new();
            let mut line = 0;
            for (object, ending) in objects.iter().zip(&endings) {
                let text = serde_json::to_string(object).expect("a JSON object");
                line += 1;
                expected.push((line, text.clone()));
                body.push_str(&text);
                body.push_str(match ending {
                    0 => "\n",
                    1 => "\r\n",
                    2 => "\n\n",
                    _ => "\n  \t\n",
                });
                line += usize::from(*ending >= 2);
            }
            if endings[objects.len() - 1] == 0 {
                body.pop();
            }
            prop_assert_eq!(split(&frames(body.as_bytes(), &cuts)), Ok(expected));
        }
    }
}

//! The stream framer (RFC 3261 §18.3) on arbitrary byte streams cut at
//! arbitrary points: no panic, every frame inside the buffer and within the
//! size limit, and the same frames whatever the cuts (a TCP stream may be
//! segmented anywhere).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_lb_proto::stream::{Frame, Framer};

/// Frames of `stream` fed in the pieces `cuts` gives, consuming as a driver does.
fn run(stream: &[u8], cuts: &[u8], max: usize) -> Vec<(Frame, usize)> {
    let mut f = Framer::new(max);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut cut = cuts.iter().cycle();
    while at < stream.len() {
        let n = if cuts.is_empty() { stream.len() } else { usize::from(*cut.next().unwrap_or(&1)).max(1) };
        let end = (at + n).min(stream.len());
        buf.extend_from_slice(&stream[at..end]);
        at = end;
        loop {
            let frame = f.next(&buf);
            let len = match frame {
                Frame::NeedMore => break,
                Frame::Fatal { head, .. } => {
                    assert!(head.is_none_or(|h| h <= buf.len() && h <= max));
                    out.push((frame, 0));
                    return out;
                }
                Frame::Ping { len } | Frame::Skip { len } | Frame::NoLength { len } => len,
                Frame::Message { len, call_id } => {
                    assert!(len <= max, "message of {len} over {max}");
                    if let Some((a, b)) = call_id {
                        assert!(a <= b && b <= len);
                    }
                    len
                }
            };
            assert!(len > 0 && len <= buf.len(), "{frame:?} with {} buffered", buf.len());
            out.push((frame, len));
            buf.drain(..len);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // [max: 2 bytes][cut count][cuts...][stream]
    let [m0, m1, n, rest @ ..] = data else { return };
    let max = usize::from(u16::from_le_bytes([*m0, *m1])).max(16);
    let n = usize::from(*n).min(rest.len());
    let (cuts, stream) = rest.split_at(n);
    let whole = run(stream, &[], max);
    let pieces = run(stream, cuts, max);
    let bytewise = run(stream, &[1], max);
    assert_eq!(whole, pieces, "cuts {cuts:?}");
    assert_eq!(whole, bytewise);
});

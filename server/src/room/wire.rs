//! WebSocket frames as the server writes them (RFC 6455 §5.2).
//!
//! A server's frames are not masked, so a frame is the same bytes for every recipient:
//! the fan-out encodes each announcement once and every connection writes the same
//! shared buffer, with no copy per recipient.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// An encoded frame, shared by every connection that sends it. A thin `Arc` (8 bytes)
/// because a burst can queue millions of these at once, one per recipient.
pub type Frame = Arc<Vec<u8>>;

/// An empty ping.
pub fn ping() -> Frame {
    frame(OpCode::Control(Control::Ping), &[])
}

/// One final, unmasked frame. The header comes from tungstenite; this runs once per
/// announcement, not once per recipient.
fn frame(opcode: OpCode, payload: &[u8]) -> Frame {
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    let length = payload.len() as u64;
    let mut frame = Vec::with_capacity(header.len(length) + payload.len());
    header
        .format(length, &mut frame)
        .expect("writing to a Vec cannot fail");
    frame.extend_from_slice(payload);
    Arc::new(frame)
}

/// Frames that tungstenite wrote (its answers to pings and close frames), as one.
pub fn raw(frames: &[u8]) -> Frame {
    Arc::new(frames.to_vec())
}

/// Whether `frames` is exactly one pong frame.
pub fn is_lone_pong(frames: &[u8]) -> bool {
    let mut cursor = std::io::Cursor::new(frames);
    match FrameHeader::parse(&mut cursor) {
        Ok(Some((header, length))) => {
            header.opcode == OpCode::Control(Control::Pong)
                && cursor.position() + length == frames.len() as u64
        }
        _ => false,
    }
}

/// A whole text message in one frame.
pub fn text(payload: &str) -> Frame {
    frame(OpCode::Data(Data::Text), payload.as_bytes())
}

/// A whole text message in one frame, written as `value`'s JSON straight into the
/// frame: one allocation of about `size_hint` bytes, however long the text (a welcome
/// listing a busy room's members is tens of kilobytes, and a mass reconnect writes
/// thousands).
pub fn json(value: &impl serde::Serialize, size_hint: usize) -> Frame {
    /// The longest header a server's frame has: 2 bytes and a 64-bit length.
    const MOST_HEADER: usize = 10;
    let mut frame = Vec::with_capacity(MOST_HEADER + size_hint);
    frame.resize(MOST_HEADER, 0);
    serde_json::to_writer(&mut frame, value).expect("writing JSON to a Vec cannot fail");
    let length = (frame.len() - MOST_HEADER) as u64;
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Text),
        ..FrameHeader::default()
    };
    let mut head = Vec::with_capacity(MOST_HEADER);
    header
        .format(length, &mut head)
        .expect("writing to a Vec cannot fail");
    let start = MOST_HEADER - head.len();
    frame[start..MOST_HEADER].copy_from_slice(&head);
    frame.drain(..start);
    Arc::new(frame)
}

/// A `history` or `search` answer's JSON: `{"type":KIND,"nonce":..,"events":[..],
/// "more":..}`, the events written as their frames already have them, not encoded
/// again. A frame's text for v2 clients, and the HTTP API's body.
pub fn page_json<'a>(
    kind: &str,
    nonce: Option<&str>,
    events: impl IntoIterator<Item = &'a [u8]>,
    more: bool,
) -> Vec<u8> {
    let mut json = Vec::with_capacity(256);
    json.extend_from_slice(b"{\"type\":");
    serde_json::to_writer(&mut json, kind).expect("writing JSON to a Vec cannot fail");
    if let Some(nonce) = nonce {
        json.extend_from_slice(b",\"nonce\":");
        serde_json::to_writer(&mut json, nonce).expect("writing JSON to a Vec cannot fail");
    }
    json.extend_from_slice(b",\"events\":[");
    for (at, event) in events.into_iter().enumerate() {
        if at > 0 {
            json.push(b',');
        }
        json.extend_from_slice(event);
    }
    json.extend_from_slice(b"],\"more\":");
    json.extend_from_slice(if more { b"true" } else { b"false" });
    json.push(b'}');
    json
}

/// A whole text message in one frame, from JSON already written.
pub fn text_bytes(payload: &[u8]) -> Frame {
    frame(OpCode::Data(Data::Text), payload)
}

/// A whole binary message in one frame.
pub fn binary(payload: &[u8]) -> Frame {
    frame(OpCode::Data(Data::Binary), payload)
}

/// A close frame with a status code and a reason (at most 123 bytes, as RFC 6455 allows;
/// ours are short constants).
pub fn close(code: u16, reason: &str) -> Frame {
    debug_assert!(reason.len() <= 123);
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    frame(OpCode::Control(Control::Close), &payload)
}

/// The payload of a frame this module encoded.
pub fn payload(frame: &[u8]) -> &[u8] {
    match frame[1] {
        126 => &frame[4..],
        127 => &frame[10..],
        _ => &frame[2..],
    }
}

/// The most a frame of a message whose client sent `text` can cost in a queue, in any
/// protocol (see `outbox::queued_cost`): its JSON, each character that JSON escapes
/// counted escaped (a control character as six bytes), the event's other fields at
/// their bounds, the frame's header and its place in the queue. `text` is what the
/// client sent: a plain line, or a v1 or v2 request, whose text is escaped already
/// (counted again, it errs high, never low).
pub fn most_for_text(text: &str) -> usize {
    let escaped: usize = text
        .bytes()
        .map(|byte| match byte {
            0..=0x1f => 6,
            b'"' | b'\\' => 2,
            _ => 1,
        })
        .sum();
    escaped + chat::v1::longest_event(0) + 10 + std::mem::size_of::<Frame>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_use_the_shortest_form() {
        assert_eq!(&text("hi")[..], [0x81, 2, b'h', b'i']);
        let medium = "x".repeat(126);
        assert_eq!(&text(&medium)[..4], [0x81, 126, 0, 126]);
        assert_eq!(payload(&text(&medium)), medium.as_bytes());
        let large = "y".repeat(70_000);
        let encoded = text(&large);
        assert_eq!(&encoded[..2], [0x81, 127]);
        assert_eq!(&encoded[2..10], 70_000u64.to_be_bytes());
        assert_eq!(payload(&encoded), large.as_bytes());
        assert_eq!(&binary(&[1, 2])[..], [0x82, 2, 1, 2]);
    }

    #[test]
    fn json_is_written_straight_into_a_frame_like_any_text() {
        for value in [
            serde_json::json!({"a": 1}),
            serde_json::json!({"long": "z".repeat(300)}),
            serde_json::json!({"longer": "w".repeat(70_000)}),
        ] {
            let expected = text(&value.to_string());
            assert_eq!(json(&value, 16), expected);
            assert_eq!(json(&value, 100_000), expected);
        }
    }

    #[test]
    fn lone_pongs_are_told_apart() {
        assert!(is_lone_pong(&[0x8a, 2, b'h', b'i']));
        assert!(is_lone_pong(&[0x8a, 0]));
        assert!(!is_lone_pong(&[0x8a, 0, 0x8a, 0]), "two pongs");
        assert!(!is_lone_pong(&close(1000, "")));
        assert!(!is_lone_pong(&ping()));
        assert!(!is_lone_pong(&[0x8a]), "a partial header");
    }

    #[test]
    fn frames_decode_with_tungstenite() {
        for (encoded, length) in [(text("héllo"), 6), (close(1008, "slow consumer"), 15)] {
            let mut cursor = std::io::Cursor::new(&encoded[..]);
            let (header, parsed_length) = FrameHeader::parse(&mut cursor)
                .expect("a valid header")
                .expect("a whole header");
            assert!(header.is_final && !header.rsv1 && header.mask.is_none());
            assert_eq!(parsed_length, length);
        }
        assert_eq!(
            &close(1001, "bye")[..],
            [0x88, 5, 0x03, 0xe9, b'b', b'y', b'e']
        );
    }
}

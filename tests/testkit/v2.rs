//! A `chat.v2.json` client for the tests: it asks for the protocol, checks that it got
//! it, sends each v2 request, and reads frames as `serde_json::Value`s, waiting for the
//! next frame of a type or for the error that answers a nonce.

use serde_json::{Value, json};

use crate::{Client, TestServer, connect_asking, request_asking};

/// The subprotocol this client asks for.
pub const SUBPROTOCOL: &str = chat::v2::SUBPROTOCOL;

/// How many other frames [`V2::next_of`] and [`V2::error_for`] skip before failing: a
/// test that waits for a frame that never comes fails on what came instead, not after
/// reading a busy room for ever.
pub const MAX_SKIPPED: usize = 200;

/// A client that asked for `chat.v2.json` and got it.
pub struct V2 {
    pub socket: Client,
}

/// What a message may carry besides its text.
#[derive(Debug, Default, Clone, Copy)]
pub struct Say<'a> {
    pub nonce: Option<&'a str>,
    /// The offset of the message this one answers.
    pub reply_to: Option<u64>,
    /// `kind: "action"` (`/me waves`).
    pub action: bool,
}

impl V2 {
    pub async fn connect(server: &TestServer, path: &str) -> Self {
        Self::connect_url(&server.url(path)).await
    }

    /// Connects to a whole `ws://` URL.
    pub async fn connect_url(url: &str) -> Self {
        Self {
            socket: connect_asking(url, SUBPROTOCOL).await,
        }
    }

    /// The next frame, which must be a JSON object.
    pub async fn frame(&mut self) -> Value {
        let text = self.socket.recv().await;
        let frame: Value =
            serde_json::from_str(&text).unwrap_or_else(|error| panic!("{error}: {text}"));
        assert!(frame.is_object(), "a frame is one JSON object: {text}");
        frame
    }

    /// The first frame, the welcome.
    pub async fn welcome(&mut self) -> Value {
        let frame = self.frame().await;
        assert_eq!(
            frame["type"], "welcome",
            "expected the welcome, got {frame}"
        );
        frame
    }

    /// The welcome and the events replayed after it, up to the client's own join (not
    /// included). Ephemeral frames (no offset, such as `typing`) met on the way are
    /// skipped: they are not history.
    pub async fn seated(&mut self) -> (Value, Vec<Value>) {
        let welcome = self.welcome().await;
        let own = offset(&welcome) + 1;
        let mut replayed = Vec::new();
        loop {
            let frame = self.frame().await;
            let Some(at) = frame["offset"].as_u64() else {
                continue;
            };
            if at == own {
                assert_eq!(
                    (&frame["type"], &frame["id"]),
                    (&json!("join"), &welcome["id"]),
                    "the first live event is the client's own join: {frame}"
                );
                return (welcome, replayed);
            }
            assert!(at < own, "history ends before the own join: {frame}");
            replayed.push(frame);
        }
    }

    /// Sends one request as it is.
    pub async fn send(&mut self, request: &Value) {
        self.socket.send(&request.to_string()).await;
    }

    pub async fn say(&mut self, text: &str, nonce: Option<&str>) {
        self.say_with(
            text,
            Say {
                nonce,
                ..Say::default()
            },
        )
        .await;
    }

    /// A message with a nonce, a `reply_to` or as an action, as `say` asks.
    pub async fn say_with(&mut self, text: &str, say: Say<'_>) {
        let mut request = json!({"type": "message", "text": text});
        if let Some(reply_to) = say.reply_to {
            request["reply_to"] = json!(reply_to);
        }
        if say.action {
            request["kind"] = json!("action");
        }
        self.send(&with_nonce(request, say.nonce)).await;
    }

    pub async fn edit(&mut self, target: u64, text: &str, nonce: Option<&str>) {
        let request = json!({"type": "edit", "target": target, "text": text});
        self.send(&with_nonce(request, nonce)).await;
    }

    pub async fn delete(&mut self, target: u64, nonce: Option<&str>) {
        let request = json!({"type": "delete", "target": target});
        self.send(&with_nonce(request, nonce)).await;
    }

    pub async fn react(&mut self, target: u64, emoji: &str, nonce: Option<&str>) {
        let request = json!({"type": "react", "target": target, "emoji": emoji});
        self.send(&with_nonce(request, nonce)).await;
    }

    pub async fn unreact(&mut self, target: u64, emoji: &str, nonce: Option<&str>) {
        let request = json!({"type": "unreact", "target": target, "emoji": emoji});
        self.send(&with_nonce(request, nonce)).await;
    }

    pub async fn typing(&mut self) {
        self.send(&json!({"type": "typing"})).await;
    }

    /// Moves this id's read position in the room to `offset`.
    pub async fn read(&mut self, offset: u64) {
        self.send(&json!({"type": "read", "offset": offset})).await;
    }

    /// Asks for this id's direct-message rooms.
    pub async fn dms(&mut self, nonce: Option<&str>) {
        self.send(&with_nonce(json!({"type": "dms"}), nonce)).await;
    }

    /// The next frame whose `type` is `kind`, skipping up to [`MAX_SKIPPED`] others.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        self.next_matching(&format!("a {kind:?} frame"), |frame| frame["type"] == kind)
            .await
    }

    /// The frame of type `kind` that answers `nonce`, or fails on the error that does
    /// instead, skipping up to [`MAX_SKIPPED`] others.
    pub async fn error_or(&mut self, kind: &str, nonce: &str) -> Value {
        let answer = self
            .next_matching(&format!("the answer to {nonce:?}"), |frame| {
                frame["nonce"] == nonce && (frame["type"] == kind || frame["type"] == "error")
            })
            .await;
        assert_eq!(answer["type"], kind, "{answer}");
        answer
    }

    /// The `error` frame that answers `nonce`, skipping up to [`MAX_SKIPPED`] others.
    pub async fn error_for(&mut self, nonce: &str) -> Value {
        self.next_matching(&format!("the error for nonce {nonce:?}"), |frame| {
            frame["type"] == "error" && frame["nonce"] == nonce
        })
        .await
    }

    /// The next frame `wanted` accepts, skipping up to `max_skipped` others (a flood's
    /// echoes), without keeping them.
    pub async fn next_matching_within(
        &mut self,
        max_skipped: usize,
        wanted: impl Fn(&Value) -> bool,
    ) -> Value {
        for _ in 0..=max_skipped {
            let frame = self.frame().await;
            if wanted(&frame) {
                return frame;
            }
        }
        panic!("no wanted frame among the next {max_skipped}");
    }

    /// The next frame `wanted` accepts; fails, listing what it skipped, after
    /// [`MAX_SKIPPED`] others.
    pub async fn next_matching(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let mut skipped = Vec::new();
        loop {
            let frame = self.frame().await;
            if wanted(&frame) {
                return frame;
            }
            skipped.push(frame);
            assert!(
                skipped.len() <= MAX_SKIPPED,
                "expected {what}, got only {} other frames, the last: {}",
                skipped.len(),
                skipped.last().expect("one skipped")
            );
        }
    }
}

/// `request` with `"nonce"` when there is one.
fn with_nonce(mut request: Value, nonce: Option<&str>) -> Value {
    if let Some(nonce) = nonce {
        request["nonce"] = json!(nonce);
    }
    request
}

/// A frame's `offset`, which it must have.
pub fn offset(frame: &Value) -> u64 {
    frame["offset"]
        .as_u64()
        .unwrap_or_else(|| panic!("no offset in {frame}"))
}

/// A handshake request for `url` (`ws://` or `wss://`) that asks for `chat.v2.json`.
pub fn request(url: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    request_asking(url, SUBPROTOCOL)
}

#[cfg(test)]
mod tests {
    //! The client itself, against a real server: what the helpers send is accepted, and
    //! what they wait for arrives.

    use super::*;

    #[tokio::test]
    async fn the_helpers_send_what_the_server_accepts_and_find_its_answers() {
        let server = TestServer::start().await;
        let mut ada = V2::connect(&server, "/ws/7?name=Ada").await;
        let (welcome, replayed) = ada.seated().await;
        assert_eq!(welcome["read"], 0, "{welcome}");
        assert!(replayed.is_empty(), "{replayed:?}");
        let mut bob = V2::connect(&server, "/ws/8").await;
        let (_, replayed) = bob.seated().await;
        assert_eq!(replayed[0]["type"], "join", "Ada's join: {replayed:?}");
        assert_eq!(ada.next_of("join").await["id"], "8");

        ada.say("hello", Some("n1")).await;
        let hello = bob.next_of("message").await;
        assert_eq!(hello["text"], "hello");
        let target = offset(&hello);
        bob.typing().await;
        assert_eq!(ada.next_of("typing").await["id"], "8");
        bob.say_with(
            "waves",
            Say {
                reply_to: Some(target),
                action: true,
                ..Say::default()
            },
        )
        .await;
        let wave = ada.next_of("message").await;
        assert_eq!(
            (&wave["reply_to"], &wave["kind"]),
            (&json!(target), &json!("action"))
        );
        bob.react(target, "👍", None).await;
        assert_eq!(ada.next_of("react").await["target"], target);
        bob.unreact(target, "👍", None).await;
        assert_eq!(ada.next_of("unreact").await["target"], target);
        ada.edit(target, "hello!", Some("n2")).await;
        assert_eq!(bob.next_of("edit").await["text"], "hello!");

        bob.edit(target, "mine now", Some("n3")).await;
        assert_eq!(bob.error_for("n3").await["code"], "not_yours");
        bob.delete(target, Some("n4")).await;
        assert_eq!(bob.error_for("n4").await["code"], "not_yours");
        ada.delete(target, None).await;
        assert_eq!(bob.next_of("delete").await["target"], target);

        bob.read(offset(&wave)).await;
        bob.dms(Some("n5")).await;
        let dms = bob.next_of("dms").await;
        assert_eq!((&dms["nonce"], &dms["rooms"]), (&json!("n5"), &json!([])));
    }
}

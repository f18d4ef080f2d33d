//! A `chat.v1.json` client for the tests: it asks for the protocol, checks that it got
//! it, and reads the welcome, the history and the events as the protocol's types.

use chat::v1::{self, Event, EventKind, Request, ServerFrame, Welcome};

use crate::{Client, TestServer, connect_asking, request_asking};

/// A client that asked for `chat.v1.json` and got it.
pub struct V1 {
    pub socket: Client,
}

impl V1 {
    pub async fn connect(server: &TestServer, path: &str) -> Self {
        Self::connect_url(&server.url(path)).await
    }

    /// Connects to a whole `ws://` URL.
    pub async fn connect_url(url: &str) -> Self {
        Self {
            socket: connect_asking(url, v1::SUBPROTOCOL).await,
        }
    }

    pub async fn frame(&mut self) -> ServerFrame {
        let text = self.socket.recv().await;
        ServerFrame::parse(&text).unwrap_or_else(|error| panic!("{error}: {text}"))
    }

    pub async fn welcome(&mut self) -> Welcome {
        match self.frame().await {
            ServerFrame::Welcome(frame) => frame.welcome,
            other => panic!("expected the welcome, got {other:?}"),
        }
    }

    pub async fn event(&mut self) -> Event {
        match self.frame().await {
            ServerFrame::Event(event) => event,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// The welcome, the `count` history events after it, and the client's own join.
    pub async fn joined(&mut self, count: usize) -> (Welcome, Vec<Event>, Event) {
        let welcome = self.welcome().await;
        let mut history = Vec::new();
        for _ in 0..count {
            history.push(self.event().await);
        }
        let own = self.event().await;
        assert_eq!(own.kind, EventKind::join(), "{own:?}");
        assert_eq!(own.id, welcome.id);
        assert_eq!(own.offset, welcome.offset + 1, "the first live event");
        (welcome, history, own)
    }

    /// The welcome, and whatever history there is, up to the client's own join.
    pub async fn seated(&mut self) -> Welcome {
        let welcome = self.welcome().await;
        self.replay_until_own_join(&welcome).await;
        welcome
    }

    /// The history events after `welcome`, up to the client's own join (not included).
    pub async fn replay_until_own_join(&mut self, welcome: &Welcome) -> Vec<Event> {
        let mut replayed = Vec::new();
        loop {
            let event = self.event().await;
            if event.offset == welcome.offset + 1 {
                assert_eq!(
                    (event.id.as_str(), &event.kind),
                    (welcome.id.as_str(), &EventKind::join())
                );
                return replayed;
            }
            replayed.push(event);
        }
    }

    pub async fn say(&mut self, text: &str, nonce: Option<&str>) {
        let request = Request::Message {
            text: text.to_owned(),
            nonce: nonce.map(str::to_owned),
        };
        self.socket.send(&request.to_json()).await;
    }
}

/// A handshake request for `url` (`ws://` or `wss://`) that asks for `chat.v1.json`.
pub fn request(url: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    request_asking(url, v1::SUBPROTOCOL)
}

pub fn said(text: &str) -> EventKind {
    EventKind::said(text, None)
}

pub fn kinds(events: &[Event]) -> Vec<(String, EventKind)> {
    events
        .iter()
        .map(|event| (event.id.clone(), event.kind.clone()))
        .collect()
}

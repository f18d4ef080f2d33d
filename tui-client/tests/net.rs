//! The network task on its own, against a real server: which queued lines go out on a
//! new connection.

use chat::ClientId;
use chat::v1::{Request, RoomName};
use chat_tui::event::{Event, Protocol};
use chat_tui::net::{self, Outgoing, Steering, Target};
use testkit::TestServer;
use tokio::sync::mpsc;

fn message(text: &str) -> String {
    Request::Message {
        text: text.to_owned(),
        nonce: None,
    }
    .to_json()
}

/// Starts the network task for `id`, with `queued` already waiting to be sent.
fn start(server: &TestServer, id: &str, v1: bool, queued: Vec<Outgoing>) -> mpsc::Sender<Outgoing> {
    let id: ClientId = id.parse().expect("an id");
    let mut target = Target::new(
        &format!("ws://{}", server.address),
        &id,
        Default::default(),
        Default::default(),
    )
    .expect("a target");
    target.offer = if v1 { Protocol::V1 } else { Protocol::Plain };
    let (lines_out, lines) = mpsc::channel(8);
    for line in queued {
        lines_out.try_send(line).expect("room in the channel");
    }
    let (events_in, mut events) = mpsc::channel::<Event>(64);
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    tokio::spawn(net::run(
        target,
        lines,
        events_in,
        Steering::new(RoomName::default()),
    ));
    lines_out
}

#[tokio::test]
async fn over_v1_a_line_meant_for_an_earlier_connection_is_left_to_the_client_to_resend() {
    let server = TestServer::start().await;
    let mut watcher = server.join("7", "7").await;
    let queued = vec![
        Outgoing {
            connection: 0,
            line: message("meant for a connection that is gone"),
        },
        Outgoing {
            connection: 1,
            line: message("meant for this one"),
        },
    ];
    let _lines = start(&server, "5", true, queued);
    assert_eq!(watcher.recv().await, "Client #5 has entered the chat");
    // In the order queued: the first would have come before this one.
    assert_eq!(watcher.recv().await, "Client #5: meant for this one");
}

#[tokio::test]
async fn over_the_plain_protocol_a_queued_line_goes_on_the_next_connection() {
    let server = TestServer::start().await;
    let mut watcher = server.join("7", "7").await;
    let queued = vec![Outgoing {
        connection: 0,
        line: "typed while it was away".to_owned(),
    }];
    let _lines = start(&server, "5", false, queued);
    assert_eq!(watcher.recv().await, "Client #5 has entered the chat");
    assert_eq!(watcher.recv().await, "Client #5: typed while it was away");
}

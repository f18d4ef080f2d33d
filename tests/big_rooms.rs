//! Rooms above the presence threshold (`--presence-batch-above`), at a small
//! threshold: a chat.v2.json client's member list, built from its welcome, `members`
//! pages and `presence` batches by the rule in docs/PROTOCOL.md, stays exact through
//! a storm of joins and leaves; v1 and plain clients hear only their own join.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_server::Config;
use serde_json::{Value, json};
use testkit::v1::V1;
use testkit::v2::V2;
use testkit::{TestServer, eventually, within};

/// A server whose rooms batch presence above `threshold` connections, listing at most
/// `entries` joins and leaves a batch.
async fn server(threshold: usize, entries: usize) -> TestServer {
    TestServer::start_with(Config {
        presence_batch_above: threshold,
        presence_batch_entries: entries,
        handshake_rate_per_ip: None,
        rate_limit: None,
        ..Config::default()
    })
    .await
}

/// A v2 client's member list, by handle (`ref`), kept by the documented rule: a
/// welcome or a page replaces what it covers (the handles after its `after`, up to its
/// last one, or to the end when nothing more follows); a batch removes what left and
/// adds what joined; a batch that lists nothing (`truncated`) makes the list stale until
/// the pages have been read again, from the start, after it.
#[derive(Debug, Default)]
struct Roster {
    members: BTreeMap<u64, String>,
    /// Connections listed without a handle, by id: from a welcome below the threshold.
    unkeyed: BTreeMap<String, usize>,
    /// The welcome's offset: join and leave events up to it are its replay, which says
    /// nothing about membership.
    live_after: u64,
    /// Live `leave` events applied (below the threshold).
    leaves: usize,
    /// Whether every page has been read since the last fresh start: only then is the
    /// list whole, and each batch's `count` must match it.
    whole: bool,
    /// Rounds of paging begun (a page without `after`, the welcome included), and the
    /// round during which the last unlisted batch came.
    round: u64,
    stale_in: u64,
    /// Batches checked against their `count` while whole, and batches unlisted.
    checked: usize,
    truncated: usize,
}

impl Roster {
    fn welcome(&mut self, welcome: &Value) {
        self.live_after = welcome["offset"].as_u64().expect("an offset");
        self.page(None, welcome);
    }

    fn page(&mut self, after: Option<u64>, page: &Value) {
        if after.is_none() {
            // A round from the start lists everyone, those held without a handle
            // among them.
            self.unkeyed.clear();
        }
        let mut listed = Vec::new();
        for member in page["members"].as_array().expect("members") {
            let id = member["id"].as_str().expect("an id").to_owned();
            match member["ref"].as_u64() {
                Some(key) => listed.push((key, id)),
                // Only a welcome below the threshold lists members without handles.
                None => {
                    assert!(page["count"].is_null(), "no ref in a paged list: {page}");
                    *self.unkeyed.entry(id).or_default() += 1;
                }
            }
        }
        // A welcome below the threshold lists everyone, and says no more.
        let more = page["more"].as_bool().unwrap_or(false);
        if after.is_none() {
            self.round += 1;
        }
        let from = after.map_or(0, |after| after + 1);
        let to = match (more, listed.last()) {
            (true, Some((last, _))) => *last,
            _ => u64::MAX,
        };
        self.members.retain(|key, _| !(from..=to).contains(key));
        self.members.extend(listed);
        if !more && self.round > self.stale_in {
            self.whole = true;
        }
    }

    fn batch(&mut self, batch: &Value) {
        if batch["truncated"] == true {
            self.whole = false;
            self.stale_in = self.round;
            self.truncated += 1;
            return;
        }
        for gone in batch["left"].as_array().expect("left") {
            self.leave(gone);
        }
        for joined in batch["joined"].as_array().expect("joined") {
            let key = joined["ref"].as_u64().expect("a ref");
            self.members
                .insert(key, joined["id"].as_str().expect("an id").to_owned());
        }
        if self.whole {
            assert_eq!(
                self.connections().values().sum::<usize>() as u64,
                batch["count"].as_u64().expect("a count"),
                "after {batch}: {:?}",
                self.members
            );
            self.checked += 1;
        }
    }

    /// A live `join` or `leave` event (below the threshold), which names its handle.
    fn event(&mut self, event: &Value) {
        if event["offset"]
            .as_u64()
            .is_none_or(|at| at <= self.live_after)
        {
            return;
        }
        let id = event["id"].as_str().expect("an id").to_owned();
        match event["type"].as_str() {
            Some("join") => {
                let key = event["ref"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no ref: {event}"));
                self.members.insert(key, id);
            }
            Some("leave") => {
                self.leaves += 1;
                self.leave(event);
            }
            _ => {}
        }
    }

    /// Takes out the connection `gone` names by its handle; one listed without a
    /// handle (it joined before a welcome below the threshold) when none has it.
    fn leave(&mut self, gone: &Value) {
        let key = gone["ref"]
            .as_u64()
            .unwrap_or_else(|| panic!("no ref: {gone}"));
        if self.members.remove(&key).is_some() {
            return;
        }
        let id = gone["id"].as_str().expect("an id");
        assert!(
            self.unkeyed.contains_key(id),
            "{gone} left, and the list never held it: {self:?}"
        );
        let held = self.unkeyed.get_mut(id).expect("held");
        *held -= 1;
        if *held == 0 {
            self.unkeyed.remove(id);
        }
    }

    fn ids(&self) -> BTreeSet<String> {
        self.connections().into_keys().collect()
    }

    /// Connections held, by id.
    fn connections(&self) -> BTreeMap<String, usize> {
        let mut connections = self.unkeyed.clone();
        for id in self.members.values() {
            *connections.entry(id.clone()).or_default() += 1;
        }
        connections
    }
}

/// Joins a v2 client and reads up to its first live event, the batch with its own join.
async fn join_v2(server: &TestServer, id: u64) -> V2 {
    let mut client = V2::connect(server, &format!("/ws/{id}")).await;
    client.welcome().await;
    let own = client.next_of("presence").await;
    assert!(
        own["joined"]
            .as_array()
            .unwrap()
            .iter()
            .any(|member| member["id"].as_str().and_then(|text| text.parse().ok()) == Some(id)),
        "the first batch a newcomer gets holds its own join: {own}"
    );
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_v2_joiner_keeps_the_exact_membership_through_a_storm() {
    let (checked, truncated) = storm(256).await;
    assert!(checked >= 8, "batches checked: {checked}");
    assert_eq!(truncated, 0, "forty joins a round fit in a batch of 256");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_a_batchs_bound_the_late_joiner_pages_again_and_is_exact() {
    let (checked, truncated) = storm(3).await;
    assert!(truncated >= 1, "some batches had more than three changes");
    assert!(checked >= 1, "batches checked: {checked}");
}

/// A room above a threshold of 5, batches of at most `entries`, and a storm of joins
/// and leaves from four tasks while an observer pages through the room again and
/// again; after each round its list must come to the connections held. Returns the
/// batches the observer checked against their count, and those it could not apply.
async fn storm(entries: usize) -> (usize, usize) {
    let server = server(5, entries).await;
    // The truth: who the test holds connected. Ids are unique, one connection each.
    let truth: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut seeds = Vec::new();
    for id in 1..=8 {
        // The first five join below the threshold, each with a join event of its own.
        let mut seed = V2::connect(&server, &format!("/ws/{id}")).await;
        let welcome = seed.welcome().await;
        let own = seed
            .next_matching("its own join", |frame| {
                frame["offset"] == welcome["offset"].as_u64().unwrap() + 1
            })
            .await;
        let kind = if id <= 5 { "join" } else { "presence" };
        assert_eq!(own["type"], kind, "{own}");
        seeds.push(seed);
        truth.lock().unwrap().insert(id.to_string());
    }

    // The observer: its welcome is the first page, then it pages through the whole
    // room three at a time, again and again, while batches keep coming.
    let mut observer = V2::connect(&server, "/ws/999").await;
    let welcome = observer.welcome().await;
    assert_eq!(welcome["count"], 8, "{welcome}");
    let roster: Arc<Mutex<Roster>> = Arc::default();
    roster.lock().unwrap().welcome(&welcome);
    truth.lock().unwrap().insert("999".to_owned());
    let reader_roster = roster.clone();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let mut after: Option<u64> = None;
        let mut asked = 0;
        let ask = async |client: &mut V2, after: Option<u64>, asked: &mut usize| {
            *asked += 1;
            let mut request = json!({"type": "members", "limit": 3, "nonce": format!("p{asked}")});
            if let Some(after) = after {
                request["after"] = json!(after);
            }
            client.send(&request).await;
        };
        ask(&mut observer, after, &mut asked).await;
        loop {
            let frame = tokio::select! {
                _ = &mut stopped => break,
                frame = observer.frame() => frame,
            };
            match frame["type"].as_str() {
                Some("presence") => reader_roster.lock().unwrap().batch(&frame),
                Some("members") => {
                    reader_roster.lock().unwrap().page(after, &frame);
                    after = match frame["more"].as_bool() {
                        Some(true) => {
                            frame["members"].as_array().unwrap().last().unwrap()["ref"].as_u64()
                        }
                        _ => None,
                    };
                    ask(&mut observer, after, &mut asked).await;
                }
                Some("error") => panic!("a refused page: {frame}"),
                _ => {}
            }
        }
        asked
    });

    // The storm: four tasks, each joining ten and dropping most of what it joined, in
    // rounds; after each round everyone stops and the observer's list must come to the
    // truth.
    let mut held: Vec<Vec<(String, V2)>> = (0..4).map(|_| Vec::new()).collect();
    for round in 0..4u64 {
        let mut tasks = Vec::new();
        for (task, mut mine) in held.drain(..).enumerate() {
            let (server_url, truth) = (server.url(""), truth.clone());
            tasks.push(tokio::spawn(async move {
                for n in 0..10u64 {
                    let id = 1000 + round * 100 + task as u64 * 10 + n;
                    let mut client = V2::connect_url(&format!("{server_url}/ws/{id}")).await;
                    client.welcome().await;
                    truth.lock().unwrap().insert(id.to_string());
                    mine.push((id.to_string(), client));
                    // Every other join, drop one held (the oldest), without a close.
                    if n % 2 == 1 {
                        let (gone, client) = mine.remove(0);
                        truth.lock().unwrap().remove(&gone);
                        drop(client);
                    }
                }
                mine
            }));
        }
        for task in tasks {
            held.push(task.await.unwrap());
        }
        // A seed goes too, each round.
        let seed = seeds.pop().unwrap();
        drop(seed);
        truth.lock().unwrap().remove(&(8 - round).to_string());
        let wanted = truth.lock().unwrap().clone();
        eventually("the observer's list to be the room's", async || {
            let roster = roster.lock().unwrap();
            (roster.whole && roster.ids() == wanted).then_some(())
        })
        .await;
    }
    let _ = stop.send(());
    let asked = within("the observer", reader).await.unwrap();
    let roster = roster.lock().unwrap();
    assert!(
        asked > 3,
        "the observer paged during the storm ({asked} pages)"
    );
    drop(held);
    (roster.checked, roster.truncated)
}

/// A room that crosses the threshold back and forth while one id holds two
/// connections: every leave, one by one or in a batch, names the connection that left
/// by its handle, so that a list kept by handle takes out that one, not the other of
/// the same id. Checked for an observer welcomed below the threshold (its first
/// members have no handles) and one welcomed above it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_the_threshold_and_back_each_leave_takes_out_its_own_connection() {
    let server = server(5, 256).await;
    let mut room = Crossing::default();
    for id in 1..=3 {
        room.join(&server, "", id).await;
    }
    let (mut below, below_roster) = room.observe(&server, 900).await;
    // The second 7 comes in above the threshold, in a batch.
    room.join(&server, "7a", 7).await;
    room.join(&server, "7b", 7).await;
    for id in [100, 101] {
        room.join(&server, "", id).await;
    }
    let (mut above, above_roster) = room.observe(&server, 901).await;
    // What the test is about: one list began without handles, the other with them.
    assert_eq!(below_roster.unkeyed.len(), 3, "{below_roster:?}");
    assert!(above_roster.unkeyed.is_empty(), "{above_roster:?}");
    let mut observers = [(&mut below, below_roster), (&mut above, above_roster)];
    room.settle(&mut observers).await;

    // Down to the threshold: the last leave goes on its own, then 7b's.
    for label in ["100", "101", "1", "2"] {
        room.leave(label);
    }
    room.settle(&mut observers).await;
    room.leave("7b");
    room.settle(&mut observers).await;
    for (_, roster) in &observers {
        assert_eq!(roster.leaves, 2, "2 and 7b left one by one: {roster:?}");
    }
    // Up again, and 7a leaves in a batch.
    for id in [200, 201, 202] {
        room.join(&server, "", id).await;
    }
    room.leave("7a");
    room.settle(&mut observers).await;
    let [(_, below_roster), (_, above_roster)] = &observers;
    for roster in [below_roster, above_roster] {
        assert!(
            roster.members.values().all(|id| id != "7"),
            "both 7s are gone: {roster:?}"
        );
    }
    // The observer welcomed below the threshold pages from the start: the members it
    // held without a handle come back with theirs, once each.
    let [(below, below_roster), _] = &mut observers;
    assert!(!below_roster.unkeyed.is_empty(), "{below_roster:?}");
    below
        .send(&json!({"type": "members", "limit": 100, "nonce": "all"}))
        .await;
    let page = below
        .next_matching("the page", |frame| frame["type"] == "members")
        .await;
    below_roster.page(None, &page);
    assert!(below_roster.unkeyed.is_empty(), "{below_roster:?}");
    room.settle(&mut observers).await;
}

/// The connections [`across_the_threshold_and_back_each_leave_takes_out_its_own_connection`]
/// holds, by label, and so the room's membership.
#[derive(Default)]
struct Crossing {
    held: Vec<(String, String, V2)>,
}

impl Crossing {
    /// Joins `id`, labelled `label` (its id when empty), and reads its welcome.
    async fn join(&mut self, server: &TestServer, label: &str, id: u64) {
        let mut client = V2::connect(server, &format!("/ws/{id}")).await;
        client.welcome().await;
        let label = if label.is_empty() {
            id.to_string()
        } else {
            label.to_owned()
        };
        self.held.push((label, id.to_string(), client));
    }

    /// Joins an observer `id` and starts its list from its welcome.
    async fn observe(&mut self, server: &TestServer, id: u64) -> (V2, Roster) {
        let mut client = V2::connect(server, &format!("/ws/{id}")).await;
        let mut roster = Roster::default();
        roster.welcome(&client.welcome().await);
        (client, roster)
    }

    /// Drops the connection labelled `label`, without a close.
    fn leave(&mut self, label: &str) {
        let at = self
            .held
            .iter()
            .position(|(held, _, _)| held == label)
            .unwrap_or_else(|| panic!("{label} is not held"));
        drop(self.held.remove(at));
    }

    /// Reads each observer's frames until its list is the room's: the connections
    /// held, and the observers themselves.
    async fn settle(&self, observers: &mut [(&mut V2, Roster)]) {
        let mut wanted: BTreeMap<String, usize> = BTreeMap::new();
        for (_, id, _) in &self.held {
            *wanted.entry(id.clone()).or_default() += 1;
        }
        for id in ["900", "901"].into_iter().take(observers.len()) {
            wanted.insert(id.to_owned(), 1);
        }
        for (client, roster) in observers.iter_mut() {
            let reading = async {
                while roster.connections() != wanted {
                    let frame = client.frame().await;
                    match frame["type"].as_str() {
                        Some("presence") => roster.batch(&frame),
                        Some("join" | "leave") => roster.event(&frame),
                        _ => {}
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(10), reading)
                .await
                .is_err()
            {
                panic!(
                    "the list is {:?}, the room {wanted:?}",
                    roster.connections()
                );
            }
        }
    }
}

#[tokio::test]
async fn above_the_threshold_v1_and_plain_clients_hear_only_their_own_join() {
    let server = server(2, 256).await;
    // Below the threshold: today's bytes, each hears the other's join.
    let mut ann = server.join("1", "1").await;
    let mut bea = V1::connect(&server, "/ws/2").await;
    let welcome = bea.seated().await;
    assert_eq!(welcome.count, None);
    assert_eq!(ann.recv().await, "Client #2 has entered the chat");

    // A third is above 2: its own join comes first, nobody else hears of it.
    let mut cy = server.join("3", "3").await;
    let mut dee = V1::connect(&server, "/ws/4").await;
    // Its own join right after the history (seated checks it), at the offset after
    // the welcome's: the batch that holds it.
    let welcome = dee.seated().await;
    assert_eq!((welcome.count, welcome.more), (Some(3), Some(false)));
    let listed: Vec<(&str, Option<u64>)> = welcome
        .members
        .iter()
        .map(|member| (member.id.as_str(), member.key))
        .collect();
    assert!(
        listed.iter().all(|(_, key)| key.is_some()),
        "each member has its handle: {listed:?}"
    );
    let ids: Vec<&str> = listed.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, ["1", "2", "3"]);
    // A v2 client too: its welcome pages, and its first live event is a batch.
    let eve = join_v2(&server, 5).await;
    drop(eve);
    drop(cy.socket.close(None).await);

    // What everyone hears next is the message, not the joins or leaves between.
    ann.send("hello").await;
    assert_eq!(ann.recv().await, "Client #1: hello");
    let heard = bea.event().await;
    assert_eq!(heard.kind, testkit::v1::said("hello"), "{heard:?}");
    let heard = dee.event().await;
    assert_eq!(heard.kind, testkit::v1::said("hello"), "{heard:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    ann.expect_silence().await;
    drop(cy);
}

/// A big room's presence batches take offsets that its history does not keep: a
/// `history` page counts the events it holds, not the offsets between them, so a run of
/// batches neither shortens a page nor leaves it empty with more to come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_count_events_not_the_offsets_of_presence_batches() {
    let server = server(2, 256).await;
    // Two joins below the threshold (offsets 1 and 2), each an event of the history.
    let mut ann = V2::connect(&server, "/ws/1").await;
    ann.welcome().await;
    let mut bea = V2::connect(&server, "/ws/2").await;
    bea.welcome().await;
    // Above it, the third's join is a batch (3), then a message (4).
    let cy = join_v2(&server, 3).await;
    ann.say("anchor", None).await;
    let anchor = testkit::v2::offset(&ann.next_of("message").await);
    // Twelve more batches: six who come and go, each batch seen before the next.
    for id in 10..16 {
        let comer = join_v2(&server, id).await;
        drop(comer);
        let left = ann
            .next_matching("the batch with its leave", |frame| {
                frame["type"] == "presence" && !frame["left"].as_array().unwrap().is_empty()
            })
            .await;
        assert!(testkit::v2::offset(&left) > anchor);
    }
    let newest = history(
        &mut ann,
        json!({"type": "history", "before": 1000, "limit": 2, "nonce": "h"}),
    )
    .await;
    assert_eq!(newest, (vec![2, anchor], true), "the two newest events");
    let after = history(
        &mut ann,
        json!({"type": "history", "after": 1, "limit": 2, "nonce": "h"}),
    )
    .await;
    assert_eq!(after.0, vec![2, anchor], "the two events after the first");
    let past = history(
        &mut ann,
        json!({"type": "history", "after": anchor, "limit": 2, "nonce": "h"}),
    )
    .await;
    assert_eq!(past, (vec![], false), "nothing is kept after the message");
    drop((bea, cy));
}

/// The offsets of the events of `client`'s `history` page answering `request` (whose
/// nonce is "h"), and its `more`.
async fn history(client: &mut V2, request: Value) -> (Vec<u64>, bool) {
    client.send(&request).await;
    let answer = client.error_or("history", "h").await;
    let offsets = answer["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(testkit::v2::offset)
        .collect();
    (offsets, answer["more"].as_bool().unwrap())
}

/// A `members` request out of bounds is answered `invalid`, a negative `after` as a
/// limit of 0 is, and the connection goes on; a page then comes as asked.
#[tokio::test]
async fn a_members_request_out_of_bounds_is_answered_invalid() {
    let server = server(2, 256).await;
    let mut ann = V2::connect(&server, "/ws/1").await;
    ann.welcome().await;
    for (request, says) in [
        (json!({"after": -1, "limit": 10}), "not -1"),
        (json!({"after": -2, "limit": 10}), "not -2"),
        (json!({"limit": 0}), "not 0"),
        (json!({"limit": 101}), "not 101"),
    ] {
        let mut request = request;
        request["type"] = json!("members");
        request["nonce"] = json!("m");
        ann.send(&request).await;
        let error = ann.error_for("m").await;
        assert_eq!(error["code"], "invalid", "{request}: {error}");
        assert!(error["message"].as_str().unwrap().contains(says), "{error}");
    }
    ann.send(&json!({"type": "members", "limit": 10, "nonce": "m"}))
        .await;
    let page = ann.error_or("members", "m").await;
    assert_eq!(page["count"], 1, "{page}");
}

//! Signed identity for the tests: one secret, a server that checks tokens signed with
//! it, and tokens for any id.

use std::time::Duration;

use chat::ClientId;
use chat::v1::DisplayName;
use chat_server::Config;
use chat_server::identity::{JwtSecret, Tokens};

use crate::TestServer;

/// The secret every test server with tokens checks them with.
pub const SECRET: &str = "a test secret of thirty-two bytes";

pub fn secret() -> JwtSecret {
    JwtSecret::new(SECRET).expect("a long enough secret")
}

/// A server in this process that checks tokens signed with [`SECRET`].
pub async fn server_with_tokens() -> TestServer {
    TestServer::start_with(Config {
        jwt_secret: Some(secret()),
        ..Config::default()
    })
    .await
}

/// A token for `id`, good for ten minutes, with `name` if given.
pub fn token(id: &str, name: Option<&str>) -> String {
    let name = name.map(|name| DisplayName::parse(name).expect("a name"));
    Tokens::new(&secret()).mint(
        &ClientId::parse(id).expect("an id"),
        Duration::from_secs(600),
        name.as_ref(),
    )
}

//! The browser page (`client/index.html`, embedded in the binary) and the headers it is
//! served with: a Content-Security-Policy that lets the page run its own inline script
//! and style (allowed by their hashes, computed here from the embedded page, so they
//! cannot drift from it) and open WebSockets to this server, and nothing else; and an
//! ETag for revalidation.

use base64::Engine;
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// The page, embedded so that an installed binary needs no files beside it.
pub const PAGE: &str = include_str!("../../../client/index.html");

/// The operator's dashboard (`/admin`), embedded likewise. It holds nothing secret: what
/// it shows comes from `/api/v1/admin/stats`, for the API key or an admin's token.
pub const ADMIN_PAGE: &str = include_str!("../../../client/admin.html");

/// The tag through which the page learns the largest message the server takes, so that
/// it can say so before sending one; opened from disk, the page has the default.
const LIMIT_TAG: &str = r#"<meta name="chat-max-message-bytes" content="65536">"#;

/// The tag through which the page learns which protocol to speak. Opened from disk, it
/// tries chat.v1.json and falls back to the plain one (a browser fails a handshake
/// that ignores the protocol it asked for); served by us, it knows.
const PROTOCOLS_TAG: &str = r#"<meta name="chat-protocols" content="chat.v1.json plain">"#;

/// The page as this server serves it, and the headers that go with it.
pub struct Page {
    pub body: Bytes,
    pub content_security_policy: String,
    pub etag: String,
}

impl Page {
    /// The page for a server that takes messages of up to `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Self {
        let body = PAGE
            .replace(
                LIMIT_TAG,
                &format!(r#"<meta name="chat-max-message-bytes" content="{max_message_bytes}">"#),
            )
            .replace(
                PROTOCOLS_TAG,
                r#"<meta name="chat-protocols" content="chat.v1.json">"#,
            );
        Self::served(body)
    }

    /// The operator's dashboard, under the same policy as the page.
    pub fn admin() -> Self {
        Self::served(ADMIN_PAGE.to_owned())
    }

    /// `body`, a page with one inline script and one inline style, with the headers
    /// that allow exactly those.
    fn served(body: String) -> Self {
        let script = source_hash(inline(&body, "script"));
        let style = source_hash(inline(&body, "style"));
        // `connect-src 'self'` covers ws:// and wss:// to this host and port (CSP 3),
        // and the dashboard's requests; `data:` images are the inline icon;
        // `form-action 'none'` since no form is ever submitted to a URL.
        let content_security_policy = format!(
            "default-src 'none'; script-src {script}; style-src {style}; connect-src 'self'; \
             img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        );
        let digest = Sha256::digest(body.as_bytes());
        let etag = format!("\"{}\"", hex(&digest[..12]));
        Self {
            body: Bytes::from(body),
            content_security_policy,
            etag,
        }
    }
}

/// The text between the page's `<tag>` and `</tag>`; the page has one of each.
fn inline<'a>(page: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = page.find(&open).map(|at| at + open.len());
    let end = page.find(&format!("</{tag}>"));
    match (start, end) {
        (Some(start), Some(end)) if start <= end => &page[start..end],
        _ => "",
    }
}

/// A CSP source that allows exactly `text` as an inline script or style.
fn source_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let encoded = base64::engine::general_purpose::STANDARD.encode(digest);
    format!("'sha256-{encoded}'")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_the_pages_own_script_and_style_and_nothing_inline_else() {
        let page = Page::new(1000);
        let policy = &page.content_security_policy;
        assert!(policy.starts_with("default-src 'none'; script-src 'sha256-"));
        assert!(!policy.contains("unsafe-inline"));
        assert!(
            !PAGE.contains("onsubmit=") && !PAGE.contains("onclick="),
            "no inline handlers"
        );
        // The page has exactly one script and one style, the ones hashed.
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert_eq!(PAGE.matches("<style").count(), 1);
        assert!(!inline(PAGE, "script").is_empty() && !inline(PAGE, "style").is_empty());
        // A known value: the SHA-256 of the empty string.
        assert_eq!(
            source_hash(""),
            "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
        );
        assert_eq!(page.etag.len(), 26);
        assert!(
            PAGE.contains(LIMIT_TAG),
            "the page carries the default limit"
        );
        assert!(PAGE.contains(PROTOCOLS_TAG), "and tries both protocols");
        let body = std::str::from_utf8(&page.body).unwrap();
        assert!(body.contains(r#"<meta name="chat-max-message-bytes" content="1000">"#));
        assert!(body.contains(r#"<meta name="chat-protocols" content="chat.v1.json">"#));
        assert_ne!(page.etag, Page::new(65536).etag);
    }
}

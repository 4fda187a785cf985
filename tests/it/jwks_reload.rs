//! A rotated JWK set, reread on SIGHUP, against the real binary (a signal
//! needs a process): a token signed by a key the set does not hold yet is
//! refused, then accepted once the file names its `kid` and the relay got
//! SIGHUP; a set that fails to load leaves the current one in place; a key
//! dropped from the set stops verifying.
//!
//! The RSA keys are made for the test by the `openssl` command (Debian's
//! package; `scripts/test.sh` installs it); tokens are signed here with
//! them (RS256, `kid` in the header).

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;
use support::{FeedAddr, Relay, get_with, poll_until, scratch};
use tickrelay::auth::{Claims, Rights};

/// A fresh 2048-bit RSA private key (PEM) from `openssl genpkey`.
fn rsa_key(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.pem"));
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&path)
        .output()
        .expect("run openssl (`bash scripts/test.sh` installs it)");
    assert!(
        out.status.success(),
        "openssl genpkey failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// A key of the test: its `kid` and what signs with it.
struct Key {
    kid: &'static str,
    signer: EncodingKey,
}

impl Key {
    fn new(dir: &Path, kid: &'static str) -> Key {
        let pem = std::fs::read(rsa_key(dir, kid)).unwrap();
        Key {
            kid,
            signer: EncodingKey::from_rsa_pem(&pem).unwrap(),
        }
    }

    /// Its public half as a JWK, named by `kid`.
    fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.signer, Algorithm::RS256).unwrap();
        jwk.common.key_id = Some(self.kid.to_owned());
        jwk
    }

    /// A user's token signed with this key, `kid` in its header.
    fn token(&self, sub: &str) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.to_owned());
        let claims = Claims {
            sub: sub.into(),
            exp: tickrelay::clock::now_ms() / 1000 + 600,
            nbf: None,
            iat: None,
            iss: None,
            aud: None,
            tickrelay: Rights::default(),
        };
        jsonwebtoken::encode(&header, &claims, &self.signer).unwrap()
    }
}

/// Writes the JWK set of `keys` to `path`.
fn write_set(path: &Path, keys: &[&Key]) {
    let set = JwkSet {
        keys: keys.iter().map(|k| k.jwk()).collect(),
    };
    std::fs::write(path, serde_json::to_vec(&set).unwrap()).unwrap();
}

/// `/v1/symbols` with `token`: 200, or the error's status and code.
fn answer(relay: &Relay, token: &str) -> (u16, String) {
    let auth = format!("Bearer {token}");
    let r = get_with(relay.addr, "/v1/symbols", &[("Authorization", &auth)]);
    let code = if r.status == 200 {
        String::new()
    } else {
        r.json::<Value>()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    (r.status, code)
}

/// Waits until `token` is answered `want`.
fn until_answer(relay: &Relay, what: &str, token: &str, want: (u16, &str)) {
    poll_until(support::DEADLINE, what, || {
        let (status, code) = answer(relay, token);
        (status == want.0 && code == want.1).then_some(())
    });
}

#[test]
fn a_rotated_key_set_is_taken_on_sighup_and_a_broken_one_keeps_the_current() {
    let dir = scratch(&format!("jwks-{}", support::unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let (old, new) = (Key::new(&dir, "old"), Key::new(&dir, "new"));
    let jwks = dir.join("jwks.json");
    write_set(&jwks, &[&old]);
    let feed = FeedAddr::unique().arg();
    // Its log at TEST_RELAY_LOG's level, `warn` unless set: the failed
    // reload's warning is read below.
    let relay = Relay::loopback(
        "serve",
        &["--feed-a", &feed, "--jwks-file", jwks.to_str().unwrap()],
    );
    let (by_old, by_new) = (old.token("olga"), new.token("nina"));

    // Before the rotation: the new key's token is refused.
    assert_eq!(answer(&relay, &by_old), (200, String::new()));
    assert_eq!(answer(&relay, &by_new), (401, "bad_token".to_owned()));

    // The file names the new key too; nothing changes until SIGHUP.
    write_set(&jwks, &[&old, &new]);
    assert_eq!(
        answer(&relay, &by_new),
        (401, "bad_token".to_owned()),
        "the file alone is not reread"
    );
    relay.signal("HUP");
    until_answer(
        &relay,
        "the new key accepted after SIGHUP",
        &by_new,
        (200, ""),
    );
    assert_eq!(answer(&relay, &by_old), (200, String::new()));

    // A set that does not load: the relay says so and keeps the current one.
    std::fs::write(&jwks, b"{\"keys\": [ not json").unwrap();
    relay.signal("HUP");
    poll_until(support::DEADLINE, "the failed reload logged", || {
        relay
            .log()
            .contains("users' keys not reloaded")
            .then_some(())
    });
    assert_eq!(answer(&relay, &by_new), (200, String::new()));
    assert_eq!(answer(&relay, &by_old), (200, String::new()));

    // The old key dropped from the set: its tokens stop verifying.
    write_set(&jwks, &[&new]);
    relay.signal("HUP");
    until_answer(
        &relay,
        "the old key refused after SIGHUP",
        &by_old,
        (401, "bad_token"),
    );
    assert_eq!(answer(&relay, &by_new), (200, String::new()));
    let log = relay.log();
    assert!(
        !log.contains(&by_old) && !log.contains(&by_new),
        "a token in the log"
    );
}

//! Verifying JSON Web Tokens: HS256 with a shared secret, RS256 or ES256
//! with a public key, or keys by `kid` from a JWKS file (reread on
//! SIGHUP). `exp` and `sub` are required, `nbf` honoured, `iss` and `aud`
//! checked when configured, no leeway. Each key accepts only its own
//! algorithm family, so `alg: none` and HS/RS confusion (an HS256 token
//! "signed" with the RSA public key as its secret) fail like a bad
//! signature.

use std::path::PathBuf;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{Entitlement, Identity, Rights};

/// Where the keys are and what the claims must say; paths as configured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JwtSettings {
    /// HS256 shared secret, the file's bytes (trailing newline trimmed).
    pub secret_file: Option<PathBuf>,
    /// RS256 or ES256 public key, PEM.
    pub public_key_file: Option<PathBuf>,
    /// A JWK set (`{"keys":[…]}`), keys chosen by the token's `kid`.
    pub jwks_file: Option<PathBuf>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
}

impl JwtSettings {
    /// Whether any key is configured.
    pub fn enabled(&self) -> bool {
        self.secret_file.is_some() || self.public_key_file.is_some() || self.jwks_file.is_some()
    }
}

/// A token's claims.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch (required).
    pub exp: u64,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// What the user may see.
    #[serde(default)]
    pub tickrelay: Rights,
}

/// A key file that cannot be used; names the setting, never the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting `{setting}`: {reason}")]
pub struct KeyError {
    /// The setting naming the file.
    pub setting: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// Why a token was refused. The text never holds the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// `exp` has passed (`token_expired`).
    Expired,
    /// Anything else (`bad_token`): signature, algorithm, missing `exp`,
    /// `iss`, `aud`, `nbf`, malformed claims.
    Bad(String),
}

/// Keys and rules, loaded once (and again on SIGHUP for a JWKS).
pub struct Verifier {
    keys: Keys,
    settings: JwtSettings,
}

enum Keys {
    One(DecodingKey, Algorithm),
    Set(Vec<(String, DecodingKey, Algorithm)>),
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys are not printed.
        f.debug_struct("Verifier")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Reads the configured key file; `None` when no key is configured.
    pub fn load(settings: &JwtSettings) -> Result<Option<Verifier>, KeyError> {
        let read = |setting: &'static str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| KeyError {
                setting,
                reason: format!("cannot read {}: {e}", path.display()),
            })
        };
        let configured = [
            settings.secret_file.is_some(),
            settings.public_key_file.is_some(),
            settings.jwks_file.is_some(),
        ];
        if configured.iter().filter(|c| **c).count() > 1 {
            return Err(KeyError {
                setting: "jwt_secret_file",
                reason: "set one of jwt_secret_file, jwt_public_key_file and jwks_file".into(),
            });
        }
        let keys = if let Some(path) = &settings.secret_file {
            let mut secret = read("jwt_secret_file", path)?;
            while secret.last().is_some_and(|b| b.is_ascii_whitespace()) {
                secret.pop();
            }
            if secret.len() < 32 {
                return Err(KeyError {
                    setting: "jwt_secret_file",
                    reason: "the secret is shorter than 32 bytes".into(),
                });
            }
            Keys::One(DecodingKey::from_secret(&secret), Algorithm::HS256)
        } else if let Some(path) = &settings.public_key_file {
            let pem = read("jwt_public_key_file", path)?;
            if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                Keys::One(k, Algorithm::RS256)
            } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                Keys::One(k, Algorithm::ES256)
            } else {
                return Err(KeyError {
                    setting: "jwt_public_key_file",
                    reason: "not an RSA or EC (P-256) public key in PEM".into(),
                });
            }
        } else if let Some(path) = &settings.jwks_file {
            Keys::Set(read_jwks(&read("jwks_file", path)?)?)
        } else {
            return Ok(None);
        };
        Ok(Some(Verifier {
            keys,
            settings: settings.clone(),
        }))
    }

    /// The settings it was loaded from (to load it again).
    pub fn settings(&self) -> &JwtSettings {
        &self.settings
    }

    /// Verifies `token` and compiles its rights.
    pub fn verify(&self, token: &str) -> Result<Identity, VerifyError> {
        let (key, alg) = match &self.keys {
            Keys::One(k, a) => (k, *a),
            Keys::Set(set) => {
                let header = jsonwebtoken::decode_header(token).map_err(bad)?;
                let kid = header
                    .kid
                    .ok_or_else(|| VerifyError::Bad("the token names no key (`kid`)".into()))?;
                let Some((_, k, a)) = set.iter().find(|(id, _, _)| *id == kid) else {
                    return Err(VerifyError::Bad(format!("no key `{kid}` in the key set")));
                };
                (k, *a)
            }
        };
        let mut v = Validation::new(alg);
        v.leeway = 0;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "sub"]);
        match &self.settings.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        if let Some(iss) = &self.settings.issuer {
            v.set_issuer(&[iss]);
        }
        let data = jsonwebtoken::decode::<Claims>(token, key, &v).map_err(bad)?;
        let c = data.claims;
        let rights = Entitlement::compile(&c.tickrelay)
            .map_err(|e| VerifyError::Bad(format!("claim tickrelay.{e}")))?;
        if c.sub.is_empty() {
            return Err(VerifyError::Bad("empty `sub`".into()));
        }
        Ok(Identity {
            sub: Some(c.sub.into()),
            rights,
            expires_ms: Some(c.exp.saturating_mul(1000)),
        })
    }
}

fn bad(e: jsonwebtoken::errors::Error) -> VerifyError {
    let why = match e.kind() {
        ErrorKind::ExpiredSignature => return VerifyError::Expired,
        ErrorKind::InvalidSignature => "bad signature".to_owned(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "algorithm not accepted for this key".to_owned()
        }
        ErrorKind::ImmatureSignature => "not valid yet (`nbf`)".to_owned(),
        ErrorKind::InvalidIssuer => "wrong issuer (`iss`)".to_owned(),
        ErrorKind::InvalidAudience => "wrong audience (`aud`)".to_owned(),
        ErrorKind::MissingRequiredClaim(c) => format!("missing claim `{c}`"),
        ErrorKind::InvalidClaimFormat(c) => format!("malformed claim `{c}`"),
        ErrorKind::Json(_) => "malformed claims".to_owned(),
        _ => "malformed token".to_owned(),
    };
    VerifyError::Bad(why)
}

/// The RSA and EC (P-256) keys of a JWK set, with their `kid`s.
fn read_jwks(bytes: &[u8]) -> Result<Vec<(String, DecodingKey, Algorithm)>, KeyError> {
    let err = |reason: String| KeyError {
        setting: "jwks_file",
        reason,
    };
    let set: JwkSet =
        serde_json::from_slice(bytes).map_err(|e| err(format!("not a JWK set: {e}")))?;
    let mut out = Vec::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            return Err(err("a key without `kid`".into()));
        };
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
            _ => return Err(err(format!("key `{kid}`: only RSA and EC public keys"))),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| err(format!("key `{kid}`: {e}")))?;
        out.push((kid, key, alg));
    }
    if out.is_empty() {
        return Err(err("no keys".into()));
    }
    Ok(out)
}

/// Signs `claims` with HS256 (`tickrelay token`, tests and the demo).
pub fn mint_hs256(secret: &[u8], claims: &Claims) -> Result<String, String> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn claims(sub: &str, exp: u64) -> Claims {
        Claims {
            sub: sub.into(),
            exp,
            nbf: None,
            iat: None,
            iss: None,
            aud: None,
            tickrelay: Rights {
                symbols: Some(vec!["A*".into()]),
                ..Rights::default()
            },
        }
    }

    fn verifier(settings: JwtSettings) -> Verifier {
        Verifier::load(&settings).unwrap().unwrap()
    }

    fn secret_file(dir: &std::path::Path) -> JwtSettings {
        let path = dir.join("secret");
        std::fs::write(&path, [SECRET, b"\n"].concat()).unwrap();
        JwtSettings {
            secret_file: Some(path),
            ..JwtSettings::default()
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tickrelay-jwt-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_good_token_gives_its_user_and_rights_and_bad_ones_say_why() {
        let d = dir("hs");
        let v = verifier(JwtSettings {
            issuer: Some("broker".into()),
            audience: Some("tickrelay".into()),
            ..secret_file(&d)
        });
        let good = Claims {
            iss: Some("broker".into()),
            aud: Some("tickrelay".into()),
            ..claims("alice", now() + 60)
        };
        let id = v.verify(&mint_hs256(SECRET, &good).unwrap()).unwrap();
        assert_eq!(id.sub.as_deref(), Some("alice"));
        assert!(id.rights.symbol("AAPL") && !id.rights.symbol("MSFT"));
        assert_eq!(id.expires_ms, Some(good.exp * 1000));

        let expired = Claims {
            exp: now() - 1,
            ..good.clone()
        };
        assert!(matches!(
            v.verify(&mint_hs256(SECRET, &expired).unwrap()),
            Err(VerifyError::Expired)
        ));
        let cases = [
            (
                mint_hs256(b"another-secret-another-secret-32", &good).unwrap(),
                "bad signature",
            ),
            (
                mint_hs256(
                    SECRET,
                    &Claims {
                        iss: Some("other".into()),
                        ..good.clone()
                    },
                )
                .unwrap(),
                "issuer",
            ),
            (
                mint_hs256(
                    SECRET,
                    &Claims {
                        aud: Some("other".into()),
                        ..good.clone()
                    },
                )
                .unwrap(),
                "audience",
            ),
            (
                mint_hs256(
                    SECRET,
                    &Claims {
                        nbf: Some(now() + 3600),
                        ..good.clone()
                    },
                )
                .unwrap(),
                "nbf",
            ),
            ("not.a.token".to_owned(), "malformed"),
        ];
        for (token, why) in cases {
            match v.verify(&token) {
                Err(VerifyError::Bad(reason)) => assert!(reason.contains(why), "{why}: {reason}"),
                other => panic!("{why}: {other:?}"),
            }
        }
        // `alg: none`, unsigned.
        let b64 = base64_url;
        let none = format!(
            "{}.{}.",
            b64("{\"alg\":\"none\",\"typ\":\"JWT\"}"),
            b64(&serde_json::to_string(&good).unwrap())
        );
        assert!(matches!(v.verify(&none), Err(VerifyError::Bad(_))));
        // No `exp`.
        let no_exp = format!(
            "{}.{}.x",
            b64("{\"alg\":\"HS256\",\"typ\":\"JWT\"}"),
            b64("{\"sub\":\"alice\"}")
        );
        assert!(matches!(v.verify(&no_exp), Err(VerifyError::Bad(_))));
    }

    /// Base64url without padding, as JWTs are written.
    fn base64_url(s: &str) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let b = s.as_bytes();
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, x)| acc | (u32::from(*x) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn an_rs256_key_takes_rs256_and_refuses_an_hs256_token_signed_with_it() {
        // A key made for this test alone (src/auth/testdata).
        let private = include_bytes!("testdata/rsa-test-only.key");
        let public = include_bytes!("testdata/rsa-test-only.pub");
        let d = dir("rs");
        let path = d.join("key.pub");
        std::fs::write(&path, public).unwrap();
        let v = verifier(JwtSettings {
            public_key_file: Some(path),
            ..JwtSettings::default()
        });
        let c = claims("alice", now() + 60);
        let rs = jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &c,
            &EncodingKey::from_rsa_pem(private).unwrap(),
        )
        .unwrap();
        assert_eq!(v.verify(&rs).unwrap().sub.as_deref(), Some("alice"));
        // The confusion: HS256 with the public key's bytes as the secret.
        let confused = mint_hs256(public, &c).unwrap();
        match v.verify(&confused) {
            Err(VerifyError::Bad(why)) => assert!(why.contains("algorithm"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn key_files_are_checked_at_start() {
        let d = dir("keys");
        let short = d.join("short");
        std::fs::write(&short, b"too short").unwrap();
        let err = Verifier::load(&JwtSettings {
            secret_file: Some(short),
            ..JwtSettings::default()
        })
        .unwrap_err();
        assert_eq!(err.setting, "jwt_secret_file");
        let junk = d.join("junk.pem");
        std::fs::write(
            &junk,
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let err = Verifier::load(&JwtSettings {
            public_key_file: Some(junk),
            ..JwtSettings::default()
        })
        .unwrap_err();
        assert_eq!(err.setting, "jwt_public_key_file");
        assert!(Verifier::load(&JwtSettings::default()).unwrap().is_none());
        let both = JwtSettings {
            jwks_file: Some(d.join("x")),
            ..secret_file(&d)
        };
        assert!(Verifier::load(&both).is_err());
    }
}

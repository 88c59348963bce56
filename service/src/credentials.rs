//! What the service holds for the filter's upstream credentials: the public keys of
//! `signed_request` tokens, published as a JWKS for upstreams to verify against, and the
//! secrets filters fetch by name (`{"control": NAME}`), from the config or from a file
//! re-read on every fetch, so rotating one is an edit, not a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use airlock_filter::credentials::signed::{public_jwk_from_pem, SigningAlg};
use airlock_filter::credentials::{header_safe, valid_secret_name, Secret};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::expand_env;
use crate::config_error::ConfigError;

/// `[[signing_keys]]`: one key the filter signs with (or will, or did until lately).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyConfig {
    /// The filter's `key_id` for this key: the JWK's `kid`.
    pub key_id: String,
    pub alg: SigningAlg,
    /// PEM text (`${ENV}` references resolved): the filter's PKCS#8 private key, of which
    /// only the public half is published, or the public key alone.
    #[serde(default)]
    pub key: Option<Secret>,
    /// A PEM file instead, read at start.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// The JWKS document of `keys`, built once at start: every error names its field and
/// never quotes the key.
pub fn published_jwks(keys: &[SigningKeyConfig], env: &HashMap<String, String>) -> Result<Value, ConfigError> {
    let mut jwks = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let field = format!("signing_keys[{i}]");
        if key.key_id.is_empty() || !key.key_id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::new(format!("{field}.key_id"), "must be printable ASCII, not empty"));
        }
        if keys.iter().take(i).any(|k| k.key_id == key.key_id) {
            return Err(ConfigError::new(format!("{field}.key_id"), format!("`{}` is listed twice", key.key_id)));
        }
        let (pem, pem_field) = match (&key.key, &key.key_file) {
            (Some(text), None) => (expand_env(text.expose(), &format!("{field}.key"), env)?, format!("{field}.key")),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new(format!("{field}.key_file"), format!("cannot read {}: {e}", path.display()))
                })?;
                (text, format!("{field}.key_file"))
            }
            _ => return Err(ConfigError::new(field, "give exactly one of `key` or `key_file`")),
        };
        jwks.push(public_jwk_from_pem(key.alg, &key.key_id, &pem).map_err(|p| ConfigError::new(pem_field, p))?);
    }
    Ok(json!({ "keys": jwks }))
}

/// Where the secrets filters fetch come from.
#[derive(Debug, Clone, Default)]
pub struct SecretStore {
    inline: HashMap<String, Secret>,
    /// A JSON object of name → value, re-read on every fetch; it wins over `inline`.
    file: Option<PathBuf>,
}

/// Why a secret cannot be served.
#[derive(Debug, PartialEq, Eq)]
pub enum SecretError {
    NotFound,
    /// The file cannot be read or parsed; the message never holds a value.
    Unavailable(String),
}

impl SecretStore {
    /// Checks names and values, resolves `${ENV}` references, and reads the file once so
    /// that a broken one stops the start rather than the first fetch.
    pub fn new(
        inline: &HashMap<String, Secret>,
        file: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<SecretStore, ConfigError> {
        let mut resolved = HashMap::with_capacity(inline.len());
        for (name, value) in inline {
            let field = format!("secrets.values.{name}");
            if !valid_secret_name(name) {
                return Err(ConfigError::new(field, "secret names are 1 to 128 of a-z, A-Z, 0-9, `_`, `-` and `.`"));
            }
            let value = expand_env(value.expose(), &field, env)?;
            header_safe(&value).map_err(|p| ConfigError::new(&field, p))?;
            resolved.insert(name.clone(), Secret::new(value));
        }
        let store = SecretStore { inline: resolved, file: file.map(Path::to_path_buf) };
        if let Some(path) = &store.file {
            store.read_file(path).map_err(|p| ConfigError::new("secrets.file", p))?;
        }
        Ok(store)
    }

    /// The current value of `name`.
    pub fn get(&self, name: &str) -> Result<Secret, SecretError> {
        if let Some(path) = &self.file {
            let mut from_file = self.read_file(path).map_err(SecretError::Unavailable)?;
            if let Some(value) = from_file.remove(name) {
                return Ok(value);
            }
        }
        self.inline.get(name).cloned().ok_or(SecretError::NotFound)
    }

    fn read_file(&self, path: &Path) -> Result<HashMap<String, Secret>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        // The parser's message may quote the text: only its position is kept.
        let map: HashMap<String, Secret> = serde_json::from_str(&text).map_err(|e| {
            format!(
                "{} is not a JSON object of names and string values (line {}, column {})",
                path.display(),
                e.line(),
                e.column()
            )
        })?;
        for (name, value) in &map {
            if !valid_secret_name(name) {
                return Err(format!("{}: `{}` is not a valid secret name", path.display(), name.escape_debug()));
            }
            header_safe(value.expose()).map_err(|p| format!("{}: secret `{name}`: {p}", path.display()))?;
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEADqYNakSl8Qa56NAhZufqI2Cob8J6r42Wi+ulp5Rkvl8=
-----END PUBLIC KEY-----";

    fn key(kid: &str, pem: &str) -> SigningKeyConfig {
        SigningKeyConfig { key_id: kid.into(), alg: SigningAlg::EdDSA, key: Some(Secret::new(pem)), key_file: None }
    }

    #[test]
    fn two_keys_are_published_for_rotation_and_a_repeated_id_is_refused() {
        let doc = published_jwks(&[key("old", ED25519_PUBLIC), key("new", ED25519_PUBLIC)], &HashMap::new()).unwrap();
        let kids: Vec<&str> = doc["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
        assert_eq!(kids, ["old", "new"]);
        assert_eq!(doc["keys"][0]["kty"], "OKP");
        let err = published_jwks(&[key("a", ED25519_PUBLIC), key("a", ED25519_PUBLIC)], &HashMap::new()).unwrap_err();
        assert_eq!(err.field, "signing_keys[1].key_id");
    }

    #[test]
    fn a_key_that_does_not_parse_names_its_field_and_not_its_text() {
        let err = published_jwks(&[key("a", "-----BEGIN PUBLIC KEY-----\nnot-a-key\n")], &HashMap::new()).unwrap_err();
        assert_eq!(err.field, "signing_keys[0].key");
        assert!(!err.to_string().contains("not-a-key"), "{err}");
    }

    #[test]
    fn the_secrets_file_is_read_again_on_every_fetch_and_wins_over_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.json");
        std::fs::write(&file, r#"{"db": "one"}"#).unwrap();
        let inline = HashMap::from([("db".to_string(), Secret::new("inline")), ("other".into(), Secret::new("x"))]);
        let store = SecretStore::new(&inline, Some(&file), &HashMap::new()).unwrap();
        assert_eq!(store.get("db").unwrap().expose(), "one");
        std::fs::write(&file, r#"{"db": "two"}"#).unwrap();
        assert_eq!(store.get("db").unwrap().expose(), "two");
        assert_eq!(store.get("other").unwrap().expose(), "x");
        assert_eq!(store.get("nope"), Err(SecretError::NotFound));
        std::fs::write(&file, r#"{"db": "hunter2"#).unwrap();
        match store.get("db") {
            Err(SecretError::Unavailable(why)) => assert!(!why.contains("hunter2"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn inline_secrets_resolve_env_references_and_refuse_what_cannot_go_in_a_header() {
        let env = HashMap::from([("DB".to_string(), "from-env".to_string())]);
        let store = SecretStore::new(&HashMap::from([("db".to_string(), Secret::new("${DB}"))]), None, &env).unwrap();
        assert_eq!(store.get("db").unwrap().expose(), "from-env");
        let bad = HashMap::from([("db".to_string(), Secret::new("a\nb"))]);
        assert_eq!(SecretStore::new(&bad, None, &env).unwrap_err().field, "secrets.values.db");
    }
}

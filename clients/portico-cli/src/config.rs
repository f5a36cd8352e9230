//! Profiles: named sets of a server URL and credentials in a JSON file, so a developer
//! switches between a local stack and staging with `--profile`. The file is
//! `$PORTICO_CONFIG`, else `$XDG_CONFIG_HOME/portico/config.json`, else
//! `~/.config/portico/config.json` (JSON because no TOML parser is in the tree).
//! Flags and environment variables override the profile field by field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use portico_client::Auth;
use serde::{Deserialize, Serialize};

/// The config file.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigFile {
    /// The profile used without `--profile` (else `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_profile: Option<String>,
    /// Profiles by name.
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// One server and the credentials to use there. Every field is optional: a partner
/// profile holds an API key, an internal one the service token and a user id.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    /// The server root, e.g. `http://127.0.0.1:8080`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A user's JWT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The service token (internal callers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_token: Option<String>,
    /// The user a service-token call acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// A partner integration's API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Its secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_secret: Option<String>,
    /// The operator token (dead-letter administration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_token: Option<String>,
}

impl Profile {
    /// Fields set in `over` replace this profile's. Credentials go as a whole: when
    /// `over` names any (a token, the service token, a partner key or secret, the
    /// operator token), none of this profile's stay, so `PORTICO_API_KEY` with a
    /// profile holding a service token calls as the partner.
    pub fn overlay(mut self, over: Profile) -> Profile {
        if over.token.is_some()
            || over.service_token.is_some()
            || over.api_key.is_some()
            || over.api_secret.is_some()
            || over.operator_token.is_some()
        {
            self.token = None;
            self.service_token = None;
            self.api_key = None;
            self.api_secret = None;
            self.operator_token = None;
        }
        macro_rules! take {
            ($($f:ident),*) => { $( if over.$f.is_some() { self.$f = over.$f; } )* };
        }
        take!(
            url,
            token,
            service_token,
            user_id,
            api_key,
            api_secret,
            operator_token
        );
        self
    }

    /// The credentials, in order of precedence: a user JWT, the service token with a
    /// user id, partner Basic, the operator token, none.
    pub fn auth(&self) -> anyhow::Result<Auth> {
        if let Some(token) = &self.token {
            return Ok(Auth::UserJwt(token.clone()));
        }
        if let Some(token) = &self.service_token {
            let Some(user) = &self.user_id else {
                bail!(
                    "the service token acts for a user: set --user-id (PORTICO_USER_ID) or userId in the profile"
                );
            };
            return Ok(Auth::service(token.clone(), user.clone()));
        }
        match (&self.api_key, &self.api_secret) {
            (Some(key), Some(secret)) => return Ok(Auth::partner(key.clone(), secret.clone())),
            (Some(_), None) | (None, Some(_)) => {
                bail!("partner credentials need both --api-key and --api-secret")
            }
            (None, None) => {}
        }
        if let Some(token) = &self.operator_token {
            return Ok(Auth::Operator {
                token: token.clone(),
                name: self.user_id.clone(),
            });
        }
        Ok(Auth::None)
    }
}

/// Where the config file is.
pub fn path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PORTICO_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(dir).join("portico/config.json"));
    }
    std::env::var_os("HOME")
        .filter(|p| !p.is_empty())
        .map(|home| PathBuf::from(home).join(".config/portico/config.json"))
}

/// Reads the file; a missing file is an empty configuration.
pub fn load(path: &Path) -> anyhow::Result<ConfigFile> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("config file {} is not valid", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the file (owner-only permissions: it holds credentials).
pub fn save(path: &Path, config: &ConfigFile) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut text = serde_json::to_string_pretty(config)?;
    text.push('\n');
    let tmp = path.with_extension("json.tmp");
    {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(text.as_bytes())?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Picks the profile: `name` if given (it must exist), else the file's default, else
/// `default` when present, else an empty profile.
pub fn select(config: &ConfigFile, name: Option<&str>) -> anyhow::Result<Profile> {
    if let Some(name) = name {
        return config.profiles.get(name).cloned().with_context(|| {
            format!(
                "no profile {name:?} in the config file (profiles: {})",
                config
                    .profiles
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
    }
    let default = config.default_profile.as_deref().unwrap_or("default");
    Ok(config.profiles.get(default).cloned().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flags/env overlay the profile field by field; auth follows the precedence.
    #[test]
    fn overlay_and_auth_precedence() {
        let file = Profile {
            url: Some("http://file".into()),
            service_token: Some("svc".into()),
            user_id: Some("u1".into()),
            ..Profile::default()
        };
        let over = Profile {
            url: Some("http://flag".into()),
            ..Profile::default()
        };
        let merged = file.clone().overlay(over);
        assert_eq!(merged.url.as_deref(), Some("http://flag"));
        assert_eq!(merged.auth().unwrap(), Auth::service("svc", "u1"));
        let partner = merged.clone().overlay(Profile {
            api_key: Some("pk".into()),
            api_secret: Some("sk".into()),
            ..Profile::default()
        });
        assert_eq!(partner.auth().unwrap(), Auth::partner("pk", "sk"));
        // --user-id alone keeps the profile's service token.
        let other_user = merged.clone().overlay(Profile {
            user_id: Some("u2".into()),
            ..Profile::default()
        });
        assert_eq!(other_user.auth().unwrap(), Auth::service("svc", "u2"));
        let jwt = merged.overlay(Profile {
            token: Some("jwt".into()),
            ..Profile::default()
        });
        assert_eq!(jwt.auth().unwrap(), Auth::UserJwt("jwt".into()));
        let half = Profile {
            api_key: Some("k".into()),
            ..Profile::default()
        };
        assert!(half.auth().is_err());
        let no_user = Profile {
            service_token: Some("svc".into()),
            ..Profile::default()
        };
        assert!(no_user.auth().is_err());
    }

    /// The file round-trips and a named profile must exist.
    #[test]
    fn save_load_select() {
        let dir = std::env::temp_dir().join(format!("portico-cli-test-{}", uuid::Uuid::new_v4()));
        let path = dir.join("config.json");
        let mut config = ConfigFile::default();
        assert_eq!(load(&path).unwrap(), config);
        config.default_profile = Some("local".into());
        config.profiles.insert(
            "local".into(),
            Profile {
                url: Some("http://127.0.0.1:8080".into()),
                ..Profile::default()
            },
        );
        save(&path, &config).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded, config);
        assert_eq!(
            select(&loaded, None).unwrap().url.as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert!(select(&loaded, Some("staging")).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}

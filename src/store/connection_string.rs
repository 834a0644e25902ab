//! What a SQL Server / Azure SQL `PROCFWK_METADATA_DB` value says: an ADO.NET-style connection string taken
//! apart into the login (kind of authentication, user, password, tenant), the TLS mode, the database, the
//! connect timeout, and the rest of the string for the driver.
//!
//! Part of the store's interface rather than of the SQL Server adapter because the settings check it at
//! start-up ([`super::check_setting`]), below the adapters; it is pure (no I/O, no driver types). The
//! adapter ([`crate::adapters::sqlserver`]) turns a [`ConnectionString`] into a driver configuration.
//!
//! Keys (case-insensitive, inner blanks collapsed) understood here; the module documentation of the
//! adapter lists what each means. The string, the password and every token stay out of errors: no error
//! repeats a part of the string.

use super::StoreError;
use crate::secret::Secret;
use std::fmt;
use std::time::Duration;

/// `Connect Timeout` when the string gives none: one TCP connect + TLS + login.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest `Connect Timeout` honoured.
const MAX_CONNECT_TIMEOUT_SECS: u64 = 600;

const AUTHENTICATION_KEYS: &[&str] = &["authentication"];
const INTEGRATED_SECURITY_KEYS: &[&str] = &[
    "integrated security",
    "integratedsecurity",
    "trusted_connection",
];
const ENCRYPT_KEYS: &[&str] = &["encrypt"];
const USER_KEYS: &[&str] = &["uid", "username", "user", "user id"];
const PASSWORD_KEYS: &[&str] = &["password", "pwd"];
const TENANT_KEYS: &[&str] = &["tenant id", "tenantid"];
const TIMEOUT_KEYS: &[&str] = &["connect timeout", "connection timeout", "timeout"];
const DATABASE_KEYS: &[&str] = &["database", "initial catalog", "databasename"];

/// How the backend logs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthKind {
    /// SQL authentication (`User ID` + `Password`).
    SqlPassword,
    /// An Entra token of the Function App's system-assigned managed identity.
    ManagedIdentity,
    /// An Entra token of a service principal (client credentials).
    ServicePrincipal,
}

impl fmt::Display for AuthKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SqlPassword => "SQL login",
            Self::ManagedIdentity => "Entra ID, managed identity",
            Self::ServicePrincipal => "Entra ID, service principal",
        })
    }
}

/// How much of the traffic TLS covers (`Encrypt`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// All of it (the default; `Encrypt=true`).
    Required,
    /// The login only (`Encrypt=false`).
    LoginOnly,
    /// None (`Encrypt=DANGER_PLAINTEXT`, accepted only for a loopback server).
    Plaintext,
}

impl TlsMode {
    /// For logs and [`crate::store::Backend::describe`].
    pub fn describe(self) -> &'static str {
        match self {
            Self::Required => "TLS required",
            Self::LoginOnly => "TLS for the login only",
            Self::Plaintext => "no TLS (loopback test server)",
        }
    }
}

/// A connection string taken apart.
pub struct ConnectionString {
    /// What the driver (tiberius) gets: the original minus the keys read here.
    pub driver_string: String,
    pub auth: AuthKind,
    pub tls: TlsMode,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub tenant: Option<String>,
    pub database: Option<String>,
    pub connect_timeout: Duration,
}

/// Check a connection string without connecting (start-up validation of `PROCFWK_METADATA_DB`).
pub fn check(setting: &str) -> Result<(), StoreError> {
    parse(setting).map(drop)
}

/// Take a connection string apart; refuses what procfwk cannot log in with.
pub fn parse(setting: &str) -> Result<ConnectionString, StoreError> {
    let parts = parse_parts(setting)?;
    let get = |names: &[&str]| last_value(&parts, names);
    let auth = auth_kind(get(AUTHENTICATION_KEYS))?;
    refuse_integrated_security(get(INTEGRATED_SECURITY_KEYS))?;
    let tls = tls_mode(get(ENCRYPT_KEYS))?;
    let connect_timeout = connect_timeout(get(TIMEOUT_KEYS))?;
    let user = get(USER_KEYS).filter(|u| !u.is_empty());
    let password = get(PASSWORD_KEYS).map(Secret::new);
    let tenant = get(TENANT_KEYS).filter(|t| !t.trim().is_empty());
    let database = get(DATABASE_KEYS).filter(|d| !d.is_empty());
    check_login(auth, user.as_deref(), password.as_ref())?;
    Ok(ConnectionString {
        driver_string: driver_string(setting, &parts),
        auth,
        tls,
        user,
        password,
        tenant,
        database,
        connect_timeout,
    })
}

/// The value of the last part named by one of `names` (a later part overrides an earlier one).
fn last_value(parts: &[Part], names: &[&str]) -> Option<String> {
    parts
        .iter()
        .rev()
        .find(|p| names.contains(&p.key.as_str()))
        .map(|p| p.value.clone())
}

/// `Authentication`: spaces, hyphens, underscores and case are ignored.
fn auth_kind(value: Option<String>) -> Result<AuthKind, StoreError> {
    let Some(v) = value else {
        return Ok(AuthKind::SqlPassword);
    };
    let norm: String = v
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-' && *c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    match norm.as_str() {
        "" | "sqlpassword" => Ok(AuthKind::SqlPassword),
        "activedirectorymanagedidentity" | "activedirectorymsi" => Ok(AuthKind::ManagedIdentity),
        "activedirectoryserviceprincipal" => Ok(AuthKind::ServicePrincipal),
        _ => Err(StoreError::Config(format!(
            "Authentication={v} is not supported; use Sql Password, Active Directory Managed \
             Identity (or Active Directory MSI) or Active Directory Service Principal"
        ))),
    }
}

/// Windows authentication cannot work from a Function App.
fn refuse_integrated_security(value: Option<String>) -> Result<(), StoreError> {
    let Some(v) = value else { return Ok(()) };
    if v.eq_ignore_ascii_case("sspi") || parse_bool("Integrated Security", &v)? {
        return Err(StoreError::Config(
            "Windows authentication (Integrated Security) is not supported; use a SQL login or \
             Authentication=Active Directory Managed Identity"
                .into(),
        ));
    }
    Ok(())
}

/// `Encrypt`: TLS is required unless the string says otherwise.
fn tls_mode(value: Option<String>) -> Result<TlsMode, StoreError> {
    let Some(v) = value else {
        return Ok(TlsMode::Required);
    };
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "mandatory" => Ok(TlsMode::Required),
        "false" | "no" | "optional" => Ok(TlsMode::LoginOnly),
        "danger_plaintext" => Ok(TlsMode::Plaintext),
        "strict" => Err(StoreError::Config(
            "Encrypt=strict (TDS 8) is not supported by this client; use Encrypt=true".into(),
        )),
        _ => Err(StoreError::Config(
            "connection string key Encrypt must be true, false or DANGER_PLAINTEXT".into(),
        )),
    }
}

/// `Connect Timeout` in whole seconds, at most ten minutes.
fn connect_timeout(value: Option<String>) -> Result<Duration, StoreError> {
    let Some(v) = value else {
        return Ok(DEFAULT_CONNECT_TIMEOUT);
    };
    match v.trim().parse::<u64>() {
        Ok(0) | Err(_) => Err(StoreError::Config(
            "Connect Timeout must be a positive number of seconds".into(),
        )),
        Ok(secs) => Ok(Duration::from_secs(secs.min(MAX_CONNECT_TIMEOUT_SECS))),
    }
}

/// The login has what its kind of authentication needs (and nothing it cannot use).
fn check_login(
    auth: AuthKind,
    user: Option<&str>,
    password: Option<&Secret>,
) -> Result<(), StoreError> {
    let problem = match auth {
        AuthKind::SqlPassword if user.is_none() => {
            "the connection string has no User ID; give User ID and Password, or \
             Authentication=Active Directory Managed Identity"
        }
        AuthKind::ManagedIdentity if user.is_some() => {
            "user-assigned managed identities (User ID with Authentication=Active Directory \
             Managed Identity) are not supported; remove User ID to use the Function App's \
             system-assigned identity"
        }
        AuthKind::ServicePrincipal if user.is_none() || password.is_none_or(Secret::is_empty) => {
            "Authentication=Active Directory Service Principal needs User ID (the client id) \
             and Password (the client secret)"
        }
        _ => return Ok(()),
    };
    Err(StoreError::Config(problem.into()))
}

/// The original string without the parts read here. User and password are set on the driver's
/// configuration directly (tiberius' parser keeps both quotes of a doubled `""` inside a quoted password).
fn driver_string(setting: &str, parts: &[Part]) -> String {
    let ours = |key: &str| {
        AUTHENTICATION_KEYS.contains(&key)
            || ENCRYPT_KEYS.contains(&key)
            || TENANT_KEYS.contains(&key)
            || TIMEOUT_KEYS.contains(&key)
            || USER_KEYS.contains(&key)
            || PASSWORD_KEYS.contains(&key)
    };
    parts
        .iter()
        .filter(|p| !ours(&p.key))
        .map(|p| &setting[p.span.clone()])
        .collect::<Vec<_>>()
        .join(";")
}

fn parse_bool(key: &str, value: &str) -> Result<bool, StoreError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" => Ok(true),
        "false" | "no" => Ok(false),
        _ => Err(StoreError::Config(format!(
            "connection string key {key} must be true or false"
        ))),
    }
}

// ------------------------------------------------------------------------------------------------ tokens

/// One `key=value` part of a connection string.
struct Part {
    /// Lower-case, inner blanks collapsed.
    key: String,
    /// Unquoted value.
    value: String,
    /// Where the part is in the original string (without its `;`).
    span: std::ops::Range<usize>,
}

fn unclosed(what: &str) -> StoreError {
    StoreError::Config(format!("the connection string has an unclosed {what}"))
}
/// Index just past the quoted or braced token starting at `i`.
fn skip_token(bytes: &[u8], i: usize) -> Result<usize, StoreError> {
    match bytes[i] {
        q @ (b'"' | b'\'') => {
            let mut j = i + 1;
            loop {
                match bytes.get(j) {
                    None => return Err(unclosed("quote")),
                    Some(&c) if c == q => {
                        if bytes.get(j + 1) == Some(&q) {
                            j += 2;
                        } else {
                            return Ok(j + 1);
                        }
                    }
                    Some(_) => j += 1,
                }
            }
        }
        b'{' => match bytes[i..].iter().position(|&c| c == b'}') {
            Some(p) => Ok(i + p + 1),
            None => Err(unclosed("brace")),
        },
        // A plain character: step over all of it, so tokens always end on a character boundary
        // (`Password=pässword` has a two-byte `ä`).
        _ => {
            let mut j = i + 1;
            while bytes.get(j).is_some_and(|b| b & 0xC0 == 0x80) {
                j += 1;
            }
            Ok(j)
        }
    }
}

/// Split an ADO.NET connection string into its parts, honouring `"…"`, `'…'` (doubled quotes inside)
/// and `{…}`. The same tokens as the `connection-string` crate tiberius parses with, so stripping parts
/// from the original text leaves a string tiberius reads the same way.
fn parse_parts(s: &str) -> Result<Vec<Part>, StoreError> {
    let bytes = s.as_bytes();
    let mut spans = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b';' {
            spans.push(start..i);
            i += 1;
            start = i;
        } else {
            i = skip_token(bytes, i)?;
        }
    }
    spans.push(start..bytes.len());
    let mut parts = Vec::new();
    for span in spans {
        if let Some(part) = parse_part(s, span)? {
            parts.push(part);
        }
    }
    Ok(parts)
}

/// One `;`-separated part (`None`: blank); the key lower-cased with its inner blanks collapsed.
fn parse_part(s: &str, span: std::ops::Range<usize>) -> Result<Option<Part>, StoreError> {
    let text = &s[span.clone()];
    if text.trim().is_empty() {
        return Ok(None);
    }
    let tb = text.as_bytes();
    let mut j = 0;
    let mut eq = None;
    while j < tb.len() {
        if tb[j] == b'=' {
            eq = Some(j);
            break;
        }
        j = skip_token(tb, j)?;
    }
    let Some(eq) = eq else {
        // Never echo the part: it could be a fragment of a password.
        return Err(StoreError::Config(
            "the connection string has a part that is not key=value".into(),
        ));
    };
    let key = text[..eq]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase();
    if key.is_empty() {
        return Err(StoreError::Config(
            "the connection string has a part with an empty key".into(),
        ));
    }
    Ok(Some(Part {
        key,
        value: unquote(text[eq + 1..].trim())?,
        span,
    }))
}

/// The value of a part: quoted and braced tokens lose their delimiters, doubled quotes become one.
fn unquote(raw: &str) -> Result<String, StoreError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let end = skip_token(bytes, i)?;
        match bytes[i] {
            q @ (b'"' | b'\'') => {
                let quote = char::from(q);
                let doubled = format!("{quote}{quote}");
                out.push_str(&raw[i + 1..end - 1].replace(&doubled, &quote.to_string()));
            }
            b'{' => out.push_str(&raw[i + 1..end - 1]),
            _ => out.push_str(&raw[i..end]),
        }
        i = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &str) -> ConnectionString {
        match parse(s) {
            Ok(p) => p,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn non_ascii_values_parse() {
        let parsed =
            parse("Server=tcp:db.example,1433;User ID=usér;Password=pässword€;Database=prøcfwk");
        assert!(parsed.is_ok(), "{:?}", parsed.err());
        if let Ok(p) = parsed {
            assert_eq!(
                p.password
                    .as_ref()
                    .map(|s| s.expose().to_string())
                    .as_deref(),
                Some("pässword€")
            );
            assert_eq!(p.database.as_deref(), Some("prøcfwk"));
        }
    }

    /// The parser is total: no input makes it panic (random strings over a connection-string-shaped
    /// alphabet with multi-byte characters; the seed is printed so a failure can be replayed).
    #[test]
    fn the_connection_string_parser_never_panics() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = std::env::var("PROCFWK_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| rand::thread_rng().gen());
        // Past the harness' capture, so every run shows it, not only a failing one.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("the_connection_string_parser_never_panics: PROCFWK_FUZZ_SEED={seed}\n")
                .as_bytes(),
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let alphabet: Vec<char> = "=;\"'{} aZ09:,.-_äß€😀\u{0}\t"
            .chars()
            .chain("Server=tcp:x,1;Authentication=ActiveDirectoryDefault;Encrypt=true;".chars())
            .collect();
        for _ in 0..20_000 {
            let len = rng.gen_range(0..48);
            let text: String = (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            let outcome = std::panic::catch_unwind(|| parse(&text).is_ok());
            assert!(outcome.is_ok(), "panicked on {text:?} (seed {seed})");
        }
    }

    #[test]
    fn strips_our_keys_and_defaults_to_tls() {
        let p = parsed(
            "Server=tcp:srv.database.windows.net,1433;Database=procfwk;Authentication=Active Directory Service Principal;\
             User ID=app;Password=\"se;cr\"\"et\";Tenant Id=contoso.onmicrosoft.com;Connect Timeout=20",
        );
        assert_eq!(p.auth, AuthKind::ServicePrincipal);
        assert_eq!(p.tls, TlsMode::Required);
        assert_eq!(p.user.as_deref(), Some("app"));
        assert_eq!(p.password.as_ref().map(Secret::expose), Some("se;cr\"et"));
        assert_eq!(p.tenant.as_deref(), Some("contoso.onmicrosoft.com"));
        assert_eq!(p.database.as_deref(), Some("procfwk"));
        assert_eq!(p.connect_timeout, Duration::from_secs(20));
        assert_eq!(
            p.driver_string,
            "Server=tcp:srv.database.windows.net,1433;Database=procfwk"
        );
    }

    #[test]
    fn sql_login_user_and_password_are_decoded_here() {
        let p = parsed(
            "server=tcp:127.0.0.1,1433;user=sa;password={a;b};encrypt=DANGER_PLAINTEXT;app=x",
        );
        assert_eq!(p.auth, AuthKind::SqlPassword);
        assert_eq!(p.tls, TlsMode::Plaintext);
        assert_eq!(p.user.as_deref(), Some("sa"));
        assert_eq!(p.password.as_ref().map(Secret::expose), Some("a;b"));
        assert_eq!(p.driver_string, "server=tcp:127.0.0.1,1433;app=x");
        let p = parsed("server=x;uid=sa;pwd='it''s'");
        assert_eq!(p.password.as_ref().map(Secret::expose), Some("it's"));
    }

    #[test]
    fn authentication_spellings() {
        for (value, kind) in [
            ("ActiveDirectoryMsi", AuthKind::ManagedIdentity),
            ("Active Directory MSI", AuthKind::ManagedIdentity),
            (
                "active directory managed identity",
                AuthKind::ManagedIdentity,
            ),
            (
                "Active-Directory-Managed-Identity",
                AuthKind::ManagedIdentity,
            ),
        ] {
            assert_eq!(
                parsed(&format!("Server=x;Authentication={value}")).auth,
                kind
            );
        }
        assert!(matches!(
            parse("Server=x;Authentication=Active Directory Interactive"),
            Err(StoreError::Config(_))
        ));
        assert!(matches!(
            parse("Server=x;Integrated Security=SSPI"),
            Err(StoreError::Config(_))
        ));
        assert!(matches!(
            parse("Server=x;Password=p"),
            Err(StoreError::Config(_))
        ));
        assert!(matches!(
            parse("Server=x;Authentication=ActiveDirectoryServicePrincipal;User ID=a"),
            Err(StoreError::Config(_))
        ));
    }

    #[test]
    fn encrypt_values() {
        assert_eq!(
            parsed("Server=x;uid=a;Encrypt=false").tls,
            TlsMode::LoginOnly
        );
        assert_eq!(parsed("Server=x;uid=a;Encrypt=Yes").tls, TlsMode::Required);
        assert_eq!(
            parsed("Server=x;uid=a;encrypt=danger_plaintext").tls,
            TlsMode::Plaintext
        );
        assert!(parse("Server=x;uid=a;Encrypt=maybe").is_err());
    }

    #[test]
    fn malformed_strings_do_not_echo_secrets() {
        for s in [
            "Server=x;uid=a;Password=\"unclosed-s3cret",
            "Server=x;uid=a;s3cret-without-key",
        ] {
            match parse(s) {
                Err(StoreError::Config(m)) => assert!(!m.contains("s3cret"), "{m}"),
                _ => panic!("{s} should be refused"),
            }
        }
    }
}

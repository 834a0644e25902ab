//! Typed settings, read from the environment (app settings in Azure, `local.settings.json` under
//! `func start`). Every setting, its default and its meaning lives here, in one place; `docs/configuration.md`
//! mirrors this table.

use std::time::Duration;

/// A setting that is present but unusable.
#[derive(Debug, thiserror::Error)]
#[error("setting {name} = {value:?} is invalid: {problem}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub problem: String,
}

/// `MALLOC_ARENA_MAX` (glibc's own variable): malloc arenas of `procfwk serve`, default 1 (glibc's is
/// 8 per core). Each busy thread otherwise gets an arena of its own, and memory freed in one cannot
/// serve another thread's requests: with 1 000 keep-alive clients that cost ~7 MiB of resident memory.
/// One arena means one malloc lock, but glibc's per-thread caches serve most small allocations without
/// it, and the handler runs one worker thread per core. When the variable is set, glibc has applied it
/// itself and this returns `None`.
pub fn malloc_arena_max() -> Option<i32> {
    match std::env::var_os("MALLOC_ARENA_MAX") {
        Some(_) => None,
        None => Some(1),
    }
}

/// Settings of the function handler (`procfwk serve`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// `FUNCTIONS_CUSTOMHANDLER_PORT` (set by the Functions host) or `--port`; default 7071.
    pub port: u16,
    /// True when the Functions host started us (it then enforces function keys itself).
    pub under_functions_host: bool,
    /// `PROCFWK_FUNCTION_KEY`: when set and running standalone, callers must send it as `x-functions-key`
    /// or `?code=`.
    pub function_key: Option<crate::secret::Secret>,
    /// `PROCFWK_ARM_ENDPOINT`, default `https://management.azure.com`.
    pub arm_endpoint: url::Url,
    /// `PROCFWK_ARM_SCOPE`, default `https://management.azure.com/.default`.
    pub arm_scope: String,
    /// `AZURE_AUTHORITY_HOST`, default `https://login.microsoftonline.com`.
    pub authority_host: url::Url,
    /// `PROCFWK_KEYVAULT_ENDPOINT`: replaces scheme and host of Key Vault secret URLs (tests, sovereign
    /// clouds behind a proxy). Default: none, the URL is used as given.
    pub keyvault_endpoint: Option<url::Url>,
    /// `PROCFWK_KEYVAULT_CACHE_SECS`, default 300: how long a secret read from Key Vault is reused.
    pub keyvault_cache: Duration,
    /// `PROCFWK_REQUEST_BUDGET_SECS`, default 200: the most one invocation may take, retries included
    /// (ADF's Azure Function activity gives up after 230 s).
    pub request_budget: Duration,
    /// `PROCFWK_SHUTDOWN_GRACE_SECS`, default 8: on SIGTERM or SIGINT, how long `procfwk serve` waits for
    /// in-flight invocations to be answered (new ones are refused with a retryable 503) before it exits
    /// anyway, non-zero. The Functions host kills a custom handler without a signal; a SIGTERM comes from
    /// a container runtime or service manager, which commonly allow 10 s before SIGKILL (the host's own
    /// worker shutdown timeout is 10 s too): 8 s leaves room to close and exit. At most the request
    /// budget.
    pub shutdown_grace: Duration,
    /// `PROCFWK_CLAIM_GRACE_SECS`, default 30: how long past its request budget a worker's claim still
    /// counts as held by a live call. Until then a retried Execute whose run ADF does not list yet
    /// answers "another call is starting this worker"; after it the claim is taken over (or, at
    /// StartExecution, given up) once ADF is asked and lists no run of it.
    pub claim_grace: Duration,
    /// `PROCFWK_EXECUTE_QUEUED_CAP_SECS`, default 120: how long ExecutePipeline waits for a run to leave
    /// `Queued` before answering with the run id and `Queued` (the Infant then keeps polling).
    pub execute_queued_cap: Duration,
    /// `PROCFWK_POLL_INITIAL_MS`, default 250, and `PROCFWK_POLL_MAX_SECS`, default 5: ExecutePipeline and
    /// CancelPipeline poll the run starting at the initial interval, doubling up to the maximum.
    pub poll_initial: Duration,
    pub poll_max: Duration,
    /// `PROCFWK_CANCEL_WAIT_CAP_SECS`, default 120: how long CancelPipeline waits for `Cancelled`.
    pub cancel_wait_cap: Duration,
    /// `PROCFWK_HTTP_TIMEOUT_SECS`, default 30: timeout of one upstream HTTP request.
    pub http_timeout: Duration,
    /// `PROCFWK_ARM_MAX_RETRIES`, default 6: retries of throttled (429) or transient (5xx, connection)
    /// upstream failures, always within the request budget.
    pub arm_max_retries: u32,
    /// `PROCFWK_MAX_BODY_BYTES`, default 1 MiB: larger request bodies are refused with 400 (procfwk's
    /// bodies are a few KiB).
    pub max_body_bytes: u64,
    /// `PROCFWK_BODY_TIMEOUT_SECS`, default 10: a request body must have arrived this long after its
    /// head, or the call is answered 408 (a client trickling its body holds nothing for longer).
    pub body_timeout: Duration,
    /// `PROCFWK_BODY_BUFFER_BYTES`, default 16 MiB: request bytes buffered at once across all calls.
    /// Reserved as they arrive; a body that would pass the bound is answered 503 `ServerBusy` at once
    /// (nothing waits, so partly read bodies can never wait on each other). At least
    /// 2 × `PROCFWK_MAX_BODY_BYTES` + 64 KiB, so that a maximum-size invocation payload fits.
    pub body_buffer_bytes: u64,
    /// `PROCFWK_UPSTREAM_CONCURRENCY`, default 64: upstream (ARM, Entra ID, Key Vault) requests in flight
    /// at once from this process; more wait for a free slot. Twice this many invocations are admitted to
    /// work at once; the rest wait at the edge, holding their head and body (see `policy::admission`).
    pub upstream_concurrency: usize,
    /// `PROCFWK_METADATA_DB`, default `sqlite:procfwk.db`: the metadata store, `sqlite:<path>` or an
    /// Azure SQL / SQL Server connection string. Opened on the first metadata-mode call.
    pub metadata_db: crate::secret::Secret,
    /// VmPower defaults (each also a request field): see [`VmSettings`].
    pub vm: VmSettings,
}

/// Settings of `VmPower` and `VmIdleSweep`.
#[derive(Clone, Debug, PartialEq)]
pub struct VmSettings {
    /// `PROCFWK_VM_LEASE_SECS`, default 1800: how long a lease lives without a renewal (`start` and
    /// `status` calls renew it). A holder that crashes keeps the VM on for at most this plus the grace.
    pub lease_secs: u32,
    /// `PROCFWK_VM_GRACE_SECS`, default 600: how long a VM stays allocated after its last lease ended,
    /// so back-to-back pipelines do not stop and start it in between. 0 deallocates at once.
    pub grace_secs: u32,
    /// `PROCFWK_VM_JOBS_PER_NODE`, default 4: leases one runtime node takes before another node starts.
    pub jobs_per_node: u32,
    /// `PROCFWK_VM_MIN_NODES`, default 1: nodes kept running while any lease is live (high availability).
    pub min_nodes: u32,
    /// `PROCFWK_VM_POLL_SECS`, default 15: the wait suggested to callers (`RetryAfterSeconds`) while a
    /// VM starts.
    pub poll_secs: u32,
    /// `PROCFWK_COMPUTE_API_VERSION`, default `2024-07-01`: the Compute API version of VM calls.
    pub compute_api_version: String,
    /// `PROCFWK_VM_LOCK_WAIT_SECS`, default 2: how long a VmPower decision waits for a pool another
    /// decision holds (through its ARM calls) before answering "busy, not ready, ask again"; `off`
    /// waits for ever (every waiter then holds a pooled SQL connection).
    pub lock_wait: Option<Duration>,
}

/// The default of `PROCFWK_VM_LOCK_WAIT_SECS` ([`VmSettings::lock_wait`]): how long a VmPower decision
/// waits for its pool's lock.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(2);

impl Default for VmSettings {
    fn default() -> Self {
        Self {
            lease_secs: 1800,
            grace_secs: 600,
            jobs_per_node: 4,
            min_nodes: 1,
            poll_secs: 15,
            compute_api_version: "2024-07-01".into(),
            lock_wait: Some(DEFAULT_LOCK_WAIT),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            port: 7071,
            under_functions_host: false,
            function_key: None,
            arm_endpoint: url::Url::parse("https://management.azure.com")
                .unwrap_or_else(|_| unreachable!()),
            arm_scope: "https://management.azure.com/.default".into(),
            authority_host: url::Url::parse("https://login.microsoftonline.com")
                .unwrap_or_else(|_| unreachable!()),
            keyvault_endpoint: None,
            keyvault_cache: Duration::from_secs(300),
            request_budget: Duration::from_secs(200),
            shutdown_grace: Duration::from_secs(8),
            claim_grace: Duration::from_secs(30),
            execute_queued_cap: Duration::from_secs(120),
            poll_initial: Duration::from_millis(250),
            poll_max: Duration::from_secs(5),
            cancel_wait_cap: Duration::from_secs(120),
            http_timeout: Duration::from_secs(30),
            arm_max_retries: 6,
            max_body_bytes: 1024 * 1024,
            body_timeout: Duration::from_secs(10),
            body_buffer_bytes: 16 * 1024 * 1024,
            upstream_concurrency: 64,
            metadata_db: crate::secret::Secret::new("sqlite:procfwk.db"),
            vm: VmSettings::default(),
        }
    }
}

impl Settings {
    /// Read settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Read settings through `lookup` (the environment, or a map in tests). A blank value counts as
    /// unset; the first unusable setting is the error.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Source { lookup: &lookup };
        let mut s = Self::default();
        s.read_endpoints(&env)?;
        s.read_call_limits(&env)?;
        s.read_body_limits(&env)?;
        s.vm.read(&env)?;
        s.read_store(&env)?;
        s.fit_to_request_budget(&env)?;
        Ok(s)
    }

    /// Where we listen and whom we call: the port, the function key, ARM, Entra ID and Key Vault.
    fn read_endpoints(&mut self, env: &Source<'_>) -> Result<(), ConfigError> {
        if let Some(v) = env.get("FUNCTIONS_CUSTOMHANDLER_PORT") {
            self.port = parse_num("FUNCTIONS_CUSTOMHANDLER_PORT", &v)?;
            self.under_functions_host = true;
        }
        self.function_key = env
            .get("PROCFWK_FUNCTION_KEY")
            .map(crate::secret::Secret::new);
        if let Some(v) = env.get("PROCFWK_ARM_ENDPOINT") {
            self.arm_endpoint = parse_token_url("PROCFWK_ARM_ENDPOINT", &v)?;
        }
        if let Some(v) = env.get("PROCFWK_ARM_SCOPE") {
            self.arm_scope = v;
        }
        if let Some(v) = env.get("AZURE_AUTHORITY_HOST") {
            self.authority_host = parse_token_url("AZURE_AUTHORITY_HOST", &v)?;
        }
        if let Some(v) = env.get("PROCFWK_KEYVAULT_ENDPOINT") {
            self.keyvault_endpoint = Some(parse_token_url("PROCFWK_KEYVAULT_ENDPOINT", &v)?);
        }
        Ok(())
    }

    /// How long an invocation and its upstream calls may take, how they poll and how often they retry.
    fn read_call_limits(&mut self, env: &Source<'_>) -> Result<(), ConfigError> {
        self.keyvault_cache = env.secs("PROCFWK_KEYVAULT_CACHE_SECS", self.keyvault_cache)?;
        self.request_budget = env.secs("PROCFWK_REQUEST_BUDGET_SECS", self.request_budget)?;
        self.claim_grace = env.secs("PROCFWK_CLAIM_GRACE_SECS", self.claim_grace)?;
        self.execute_queued_cap =
            env.secs("PROCFWK_EXECUTE_QUEUED_CAP_SECS", self.execute_queued_cap)?;
        self.shutdown_grace = env.secs("PROCFWK_SHUTDOWN_GRACE_SECS", self.shutdown_grace)?;
        self.poll_max = env.secs("PROCFWK_POLL_MAX_SECS", self.poll_max)?;
        self.cancel_wait_cap = env.secs("PROCFWK_CANCEL_WAIT_CAP_SECS", self.cancel_wait_cap)?;
        self.http_timeout = env.secs("PROCFWK_HTTP_TIMEOUT_SECS", self.http_timeout)?;
        if let Some(v) = env.get("PROCFWK_POLL_INITIAL_MS") {
            self.poll_initial = Duration::from_millis(parse_num("PROCFWK_POLL_INITIAL_MS", &v)?);
        }
        self.arm_max_retries = env.num("PROCFWK_ARM_MAX_RETRIES", self.arm_max_retries)?;
        Ok(())
    }

    /// Request bodies: their largest size, how long one may take to arrive, how many bytes are buffered
    /// at once (enough for one maximum-size invocation payload).
    fn read_body_limits(&mut self, env: &Source<'_>) -> Result<(), ConfigError> {
        self.max_body_bytes = env.num("PROCFWK_MAX_BODY_BYTES", self.max_body_bytes)?;
        self.body_timeout = env.secs("PROCFWK_BODY_TIMEOUT_SECS", self.body_timeout)?;
        if self.body_timeout.is_zero() {
            return Err(ConfigError {
                name: "PROCFWK_BODY_TIMEOUT_SECS",
                value: "0".into(),
                problem: "a body needs some time to arrive".into(),
            });
        }
        self.body_buffer_bytes = env.num("PROCFWK_BODY_BUFFER_BYTES", self.body_buffer_bytes)?;
        let largest_payload = self.largest_payload_bytes();
        if self.body_buffer_bytes < largest_payload {
            return Err(ConfigError {
                name: "PROCFWK_BODY_BUFFER_BYTES",
                value: self.body_buffer_bytes.to_string(),
                problem: format!(
                    "must be at least 2 × PROCFWK_MAX_BODY_BYTES + 64 KiB = {largest_payload}, or no \
                     maximum-size invocation payload could be read"
                ),
            });
        }
        Ok(())
    }

    /// The metadata store (checked now, so that a malformed value stops start-up instead of failing
    /// every call) and how many upstream requests are in flight at once.
    fn read_store(&mut self, env: &Source<'_>) -> Result<(), ConfigError> {
        if let Some(v) = env.get("PROCFWK_METADATA_DB") {
            if let Err(e) = crate::store::check_setting(&v) {
                return Err(ConfigError {
                    name: "PROCFWK_METADATA_DB",
                    value: shown_setting(&v),
                    problem: e.to_string(),
                });
            }
            self.metadata_db = crate::secret::Secret::new(v);
        }
        if let Some(v) = env.get("PROCFWK_UPSTREAM_CONCURRENCY") {
            self.upstream_concurrency = parse_num("PROCFWK_UPSTREAM_CONCURRENCY", &v)?;
            if self.upstream_concurrency == 0 {
                return Err(ConfigError {
                    name: "PROCFWK_UPSTREAM_CONCURRENCY",
                    value: v,
                    problem: "must be at least 1".into(),
                });
            }
        }
        Ok(())
    }

    /// The shutdown grace and the Queued cap against the request budget: the default grace shrinks to a
    /// smaller budget, an explicit one must fit it.
    fn fit_to_request_budget(&mut self, env: &Source<'_>) -> Result<(), ConfigError> {
        if env.get("PROCFWK_SHUTDOWN_GRACE_SECS").is_none() {
            // The default never exceeds a budget set smaller than it: only an explicit grace is refused.
            self.shutdown_grace = self.shutdown_grace.min(self.request_budget);
        }
        if self.shutdown_grace > self.request_budget {
            return Err(ConfigError {
                name: "PROCFWK_SHUTDOWN_GRACE_SECS",
                value: self.shutdown_grace.as_secs_f64().to_string(),
                problem: "must not be larger than PROCFWK_REQUEST_BUDGET_SECS (no invocation runs longer)"
                    .into(),
            });
        }
        if self.execute_queued_cap >= self.request_budget {
            return Err(ConfigError {
                name: "PROCFWK_EXECUTE_QUEUED_CAP_SECS",
                value: self.execute_queued_cap.as_secs_f64().to_string(),
                problem: "must be smaller than PROCFWK_REQUEST_BUDGET_SECS".into(),
            });
        }
        Ok(())
    }
}

impl VmSettings {
    /// The `PROCFWK_VM_*` defaults and the Compute API version.
    fn read(&mut self, env: &Source<'_>) -> Result<(), ConfigError> {
        self.lease_secs = env.num("PROCFWK_VM_LEASE_SECS", self.lease_secs)?;
        self.grace_secs = env.num("PROCFWK_VM_GRACE_SECS", self.grace_secs)?;
        self.jobs_per_node = env.num("PROCFWK_VM_JOBS_PER_NODE", self.jobs_per_node)?;
        self.min_nodes = env.num("PROCFWK_VM_MIN_NODES", self.min_nodes)?;
        self.poll_secs = env.num("PROCFWK_VM_POLL_SECS", self.poll_secs)?;
        if self.lease_secs == 0 {
            return Err(ConfigError {
                name: "PROCFWK_VM_LEASE_SECS",
                value: "0".into(),
                problem: "a lease must live at least one second".into(),
            });
        }
        if let Some(v) = env.get("PROCFWK_VM_LOCK_WAIT_SECS") {
            self.lock_wait = if v.trim().eq_ignore_ascii_case("off") {
                None
            } else {
                Some(parse_secs("PROCFWK_VM_LOCK_WAIT_SECS", &v)?)
            };
        }
        if let Some(v) = env.get("PROCFWK_COMPUTE_API_VERSION") {
            self.compute_api_version = v.trim().to_string();
        }
        Ok(())
    }
}

/// Where settings are read from; a blank value counts as unset.
struct Source<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Source<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    /// A number of seconds, or `default` when unset.
    fn secs(&self, name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        match self.get(name) {
            Some(v) => parse_secs(name, &v),
            None => Ok(default),
        }
    }

    /// A whole number, or `default` when unset.
    fn num<T: std::str::FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError> {
        match self.get(name) {
            Some(v) => parse_num(name, &v),
            None => Ok(default),
        }
    }
}

impl Settings {
    /// The largest invocation payload read: it wraps the caller's body as a JSON string, so it allows
    /// for escaping overhead beyond `PROCFWK_MAX_BODY_BYTES`.
    pub fn largest_payload_bytes(&self) -> u64 {
        self.max_body_bytes
            .saturating_mul(2)
            .saturating_add(64 * 1024)
    }
}

/// A `PROCFWK_METADATA_DB` value as an error may repeat it: a connection string (`key=value;…`) may
/// hold a password, so it is not shown; of a URL only the scheme is.
fn shown_setting(v: &str) -> String {
    let v = v.trim();
    if v.contains('=') || v.contains(';') {
        "(a connection string, not shown: it may hold a password)".into()
    } else if let Some((scheme, _)) = v.split_once("://") {
        format!("{scheme}://…")
    } else {
        v.to_string()
    }
}

fn parse_num<T: std::str::FromStr>(name: &'static str, v: &str) -> Result<T, ConfigError> {
    v.trim().parse::<T>().map_err(|_| ConfigError {
        name,
        value: v.into(),
        problem: "expected a whole number".into(),
    })
}

fn parse_secs(name: &'static str, v: &str) -> Result<Duration, ConfigError> {
    let secs: f64 = v.trim().parse().map_err(|_| ConfigError {
        name,
        value: v.into(),
        problem: "expected a number of seconds".into(),
    })?;
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(ConfigError {
            name,
            value: v.into(),
            problem: "expected 0 to 86400 seconds".into(),
        });
    }
    Ok(Duration::from_secs_f64(secs))
}

/// An endpoint that will receive tokens or secrets: https, or plain http only to a loopback address.
fn parse_token_url(name: &'static str, v: &str) -> Result<url::Url, ConfigError> {
    let url = parse_url(name, v)?;
    match crate::domain::transport::refusal(&url, crate::domain::transport::PlainHttp::Loopback) {
        None => Ok(url),
        Some(problem) => Err(ConfigError {
            name,
            value: v.into(),
            problem: format!("it receives tokens, so it {problem}"),
        }),
    }
}

fn parse_url(name: &'static str, v: &str) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(v.trim()).map_err(|e| ConfigError {
        name,
        value: v.into(),
        problem: format!("not a URL: {e}"),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError {
            name,
            value: v.into(),
            problem: "expected an http or https URL".into(),
        });
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let s = from(&[]).expect("defaults are valid");
        assert_eq!(s.port, 7071);
        assert!(!s.under_functions_host);
        assert_eq!(s.execute_queued_cap, Duration::from_secs(120));
        assert_eq!(s.shutdown_grace, Duration::from_secs(8));
        assert_eq!(s.arm_endpoint.as_str(), "https://management.azure.com/");
    }

    #[test]
    fn host_port_and_overrides() {
        let s = from(&[
            ("FUNCTIONS_CUSTOMHANDLER_PORT", "40000"),
            ("PROCFWK_ARM_ENDPOINT", "http://127.0.0.1:7072"),
            ("PROCFWK_EXECUTE_QUEUED_CAP_SECS", "0.5"),
        ])
        .expect("valid");
        assert_eq!(s.port, 40000);
        assert!(s.under_functions_host);
        assert_eq!(s.execute_queued_cap, Duration::from_millis(500));
    }

    #[test]
    fn rejects_bad_values() {
        assert_eq!(
            from(&[("PROCFWK_ARM_ENDPOINT", "ftp://x")])
                .err()
                .map(|e| e.name),
            Some("PROCFWK_ARM_ENDPOINT")
        );
        assert!(from(&[("PROCFWK_REQUEST_BUDGET_SECS", "abc")]).is_err());
        assert!(from(&[("PROCFWK_EXECUTE_QUEUED_CAP_SECS", "300")]).is_err());
        assert_eq!(
            from(&[("PROCFWK_SHUTDOWN_GRACE_SECS", "201")])
                .err()
                .map(|e| e.name),
            Some("PROCFWK_SHUTDOWN_GRACE_SECS")
        );
        // Unset, the grace follows a budget set below its default instead of refusing it.
        let small = from(&[
            ("PROCFWK_REQUEST_BUDGET_SECS", "3"),
            ("PROCFWK_EXECUTE_QUEUED_CAP_SECS", "1"),
        ])
        .expect("a small budget alone is valid");
        assert_eq!(small.shutdown_grace, Duration::from_secs(3));
    }

    #[test]
    fn token_endpoints_are_https_or_loopback() {
        for name in [
            "PROCFWK_ARM_ENDPOINT",
            "AZURE_AUTHORITY_HOST",
            "PROCFWK_KEYVAULT_ENDPOINT",
        ] {
            for bad in [
                "http://10.0.0.1",
                "http://169.254.169.254",
                "http://vault.example",
                "https://user:pw@vault.example",
            ] {
                assert_eq!(
                    from(&[(name, bad)]).err().map(|e| e.name),
                    Some(name),
                    "{name}={bad}"
                );
            }
            assert!(from(&[(name, "http://127.0.0.1:4000")]).is_ok());
            assert!(from(&[(name, "https://proxy.example")]).is_ok());
        }
    }

    #[test]
    fn body_bounds() {
        let s = from(&[]).expect("defaults");
        assert_eq!(s.max_body_bytes, 1024 * 1024);
        assert_eq!(s.body_timeout, Duration::from_secs(10));
        assert_eq!(s.body_buffer_bytes, 16 * 1024 * 1024);
        let s = from(&[("PROCFWK_BODY_TIMEOUT_SECS", "2.5")]).expect("valid");
        assert_eq!(s.body_timeout, Duration::from_millis(2500));
        let e = from(&[("PROCFWK_BODY_TIMEOUT_SECS", "0")]).map(|_| ());
        assert!(matches!(
            e,
            Err(ConfigError {
                name: "PROCFWK_BODY_TIMEOUT_SECS",
                ..
            })
        ));
        // The budget must hold one maximum-size invocation payload.
        let e = from(&[("PROCFWK_BODY_BUFFER_BYTES", "1048576")]).map(|_| ());
        assert!(matches!(
            e,
            Err(ConfigError {
                name: "PROCFWK_BODY_BUFFER_BYTES",
                ..
            })
        ));
        assert!(from(&[
            ("PROCFWK_MAX_BODY_BYTES", "4096"),
            ("PROCFWK_BODY_BUFFER_BYTES", "1048576")
        ])
        .is_ok());
    }

    #[test]
    fn every_setting_is_read() {
        let s = from(&[
            ("FUNCTIONS_CUSTOMHANDLER_PORT", "40001"),
            ("PROCFWK_FUNCTION_KEY", "k"),
            ("PROCFWK_ARM_ENDPOINT", "http://127.0.0.1:7072"),
            ("PROCFWK_ARM_SCOPE", "api://scope/.default"),
            ("AZURE_AUTHORITY_HOST", "http://127.0.0.1:7073"),
            ("PROCFWK_KEYVAULT_ENDPOINT", "http://127.0.0.1:7074"),
            ("PROCFWK_KEYVAULT_CACHE_SECS", "1"),
            ("PROCFWK_REQUEST_BUDGET_SECS", "100"),
            ("PROCFWK_CLAIM_GRACE_SECS", "3"),
            ("PROCFWK_EXECUTE_QUEUED_CAP_SECS", "4"),
            ("PROCFWK_SHUTDOWN_GRACE_SECS", "5"),
            ("PROCFWK_POLL_MAX_SECS", "6"),
            ("PROCFWK_CANCEL_WAIT_CAP_SECS", "7"),
            ("PROCFWK_HTTP_TIMEOUT_SECS", "8"),
            ("PROCFWK_POLL_INITIAL_MS", "9"),
            ("PROCFWK_ARM_MAX_RETRIES", "10"),
            ("PROCFWK_MAX_BODY_BYTES", "4096"),
            ("PROCFWK_BODY_TIMEOUT_SECS", "11"),
            ("PROCFWK_BODY_BUFFER_BYTES", "1000000"),
            ("PROCFWK_VM_LEASE_SECS", "12"),
            ("PROCFWK_VM_GRACE_SECS", "13"),
            ("PROCFWK_VM_JOBS_PER_NODE", "14"),
            ("PROCFWK_VM_MIN_NODES", "2"),
            ("PROCFWK_VM_POLL_SECS", "16"),
            ("PROCFWK_VM_LOCK_WAIT_SECS", "off"),
            ("PROCFWK_COMPUTE_API_VERSION", " 2023-03-01 "),
            ("PROCFWK_METADATA_DB", "sqlite:other.db"),
            ("PROCFWK_UPSTREAM_CONCURRENCY", "17"),
        ])
        .expect("valid");
        assert_eq!((s.port, s.under_functions_host), (40001, true));
        assert!(s.function_key.is_some());
        assert_eq!(s.arm_endpoint.as_str(), "http://127.0.0.1:7072/");
        assert_eq!(s.arm_scope, "api://scope/.default");
        assert_eq!(s.authority_host.as_str(), "http://127.0.0.1:7073/");
        assert_eq!(
            s.keyvault_endpoint.as_ref().map(url::Url::as_str),
            Some("http://127.0.0.1:7074/")
        );
        let secs = Duration::from_secs;
        assert_eq!(
            [
                s.keyvault_cache,
                s.request_budget,
                s.claim_grace,
                s.execute_queued_cap,
                s.shutdown_grace,
                s.poll_max,
                s.cancel_wait_cap,
                s.http_timeout,
                s.poll_initial,
                s.body_timeout,
            ],
            [
                secs(1),
                secs(100),
                secs(3),
                secs(4),
                secs(5),
                secs(6),
                secs(7),
                secs(8),
                Duration::from_millis(9),
                secs(11),
            ]
        );
        assert_eq!(s.arm_max_retries, 10);
        assert_eq!((s.max_body_bytes, s.body_buffer_bytes), (4096, 1_000_000));
        assert_eq!(
            s.vm,
            VmSettings {
                lease_secs: 12,
                grace_secs: 13,
                jobs_per_node: 14,
                min_nodes: 2,
                poll_secs: 16,
                compute_api_version: "2023-03-01".into(),
                lock_wait: None,
            }
        );
        assert_eq!(s.metadata_db.expose(), "sqlite:other.db");
        assert_eq!(s.upstream_concurrency, 17);
        let s = from(&[
            ("PROCFWK_VM_LOCK_WAIT_SECS", "0.5"),
            ("PROCFWK_ARM_SCOPE", " "),
        ])
        .expect("valid");
        assert_eq!(s.vm.lock_wait, Some(Duration::from_millis(500)));
        assert_eq!(
            s.arm_scope, "https://management.azure.com/.default",
            "blank is unset"
        );
    }

    #[test]
    fn says_what_is_wrong_with_a_setting() {
        let cases = [
            (
                ("FUNCTIONS_CUSTOMHANDLER_PORT", "70000"),
                "setting FUNCTIONS_CUSTOMHANDLER_PORT = \"70000\" is invalid: expected a whole number",
            ),
            (
                ("PROCFWK_HTTP_TIMEOUT_SECS", "86401"),
                "setting PROCFWK_HTTP_TIMEOUT_SECS = \"86401\" is invalid: expected 0 to 86400 seconds",
            ),
            (
                ("PROCFWK_CLAIM_GRACE_SECS", "soon"),
                "setting PROCFWK_CLAIM_GRACE_SECS = \"soon\" is invalid: expected a number of seconds",
            ),
            (
                ("PROCFWK_VM_LEASE_SECS", "0"),
                "setting PROCFWK_VM_LEASE_SECS = \"0\" is invalid: a lease must live at least one second",
            ),
            (
                ("PROCFWK_VM_MIN_NODES", "-1"),
                "setting PROCFWK_VM_MIN_NODES = \"-1\" is invalid: expected a whole number",
            ),
            (
                ("PROCFWK_UPSTREAM_CONCURRENCY", "0"),
                "setting PROCFWK_UPSTREAM_CONCURRENCY = \"0\" is invalid: must be at least 1",
            ),
            (
                ("PROCFWK_BODY_TIMEOUT_SECS", "0"),
                "setting PROCFWK_BODY_TIMEOUT_SECS = \"0\" is invalid: a body needs some time to arrive",
            ),
            (
                ("PROCFWK_BODY_BUFFER_BYTES", "1024"),
                "setting PROCFWK_BODY_BUFFER_BYTES = \"1024\" is invalid: must be at least 2 × \
                 PROCFWK_MAX_BODY_BYTES + 64 KiB = 2162688, or no maximum-size invocation payload could be read",
            ),
            (
                ("PROCFWK_SHUTDOWN_GRACE_SECS", "250"),
                "setting PROCFWK_SHUTDOWN_GRACE_SECS = \"250\" is invalid: must not be larger than \
                 PROCFWK_REQUEST_BUDGET_SECS (no invocation runs longer)",
            ),
            (
                ("PROCFWK_EXECUTE_QUEUED_CAP_SECS", "200"),
                "setting PROCFWK_EXECUTE_QUEUED_CAP_SECS = \"200\" is invalid: must be smaller than \
                 PROCFWK_REQUEST_BUDGET_SECS",
            ),
        ];
        for (setting, message) in cases {
            let e = from(&[setting]).err().map(|e| e.to_string());
            assert_eq!(e.as_deref(), Some(message), "{setting:?}");
        }
        // The first unusable setting in reading order is the one named.
        let e = from(&[
            ("PROCFWK_UPSTREAM_CONCURRENCY", "0"),
            ("PROCFWK_VM_GRACE_SECS", "x"),
            ("PROCFWK_MAX_BODY_BYTES", "x"),
        ]);
        assert_eq!(e.err().map(|e| e.name), Some("PROCFWK_MAX_BODY_BYTES"));
    }

    #[test]
    fn a_malformed_metadata_db_stops_start_up_naming_the_setting() {
        let e = from(&[("PROCFWK_METADATA_DB", "sqlite3://x.db")]).map(|_| ());
        let Err(e) = e else {
            panic!("sqlite3://x.db accepted")
        };
        assert_eq!(e.name, "PROCFWK_METADATA_DB");
        assert!(e.to_string().contains("sqlite:<path>"), "{e}");
        for bad in [
            "sqlite:",
            "nonsense",
            "Server=tcp:x;Password=hunter2;Authentication=Bogus",
        ] {
            let e = from(&[("PROCFWK_METADATA_DB", bad)]).map(|_| ());
            let Err(e) = e else { panic!("{bad} accepted") };
            assert_eq!(e.name, "PROCFWK_METADATA_DB");
            assert!(
                !e.to_string().contains("hunter2"),
                "never repeats a password: {e}"
            );
        }
        for good in [
            "sqlite:procfwk.db",
            "Server=tcp:db.example.net,1433;Database=procfwk;Authentication=Active Directory Managed Identity",
        ] {
            assert!(from(&[("PROCFWK_METADATA_DB", good)]).is_ok(), "{good}");
        }
    }
}

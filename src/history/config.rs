//! The history's settings, resolved: defined here beside the code that uses them; `config`
//! reads, validates and resolves `[history]` into them.

/// `[history]` resolved: the database URL ready to connect (a relative SQLite path made
/// absolute, the PostgreSQL password set into it), kept secret.
#[derive(Debug, Clone)]
pub struct HistoryConfig {
    /// Whether readings are recorded and the history routes answer.
    pub enabled: bool,
    /// The URL to connect to; secret (it may hold a password): log [`Self::redacted_url`].
    pub url: secrecy::SecretString,
    /// Days points are kept.
    pub retention_days: u32,
    /// Days alert events and finished webhook deliveries are kept.
    pub alerts_retention_days: u32,
    /// Readings waiting to be written, at most.
    pub buffer: usize,
    /// Whether each tenant's Secure Score controls are recorded (the per-control history, its
    /// 90-day back-fill) and the `control_regressed` rules evaluated.
    pub controls: bool,
}

impl HistoryConfig {
    /// The database for logs and `check-config`: the SQLite file, or the PostgreSQL user, host,
    /// port and database — never a password or query parameters.
    pub fn redacted_url(&self) -> String {
        use secrecy::ExposeSecret;
        let url = self.url.expose_secret();
        if let Some(rest) = url.strip_prefix("sqlite://") {
            let path = rest.split_once('?').map_or(rest, |(path, _)| path);
            return format!("sqlite://{path}");
        }
        match url::Url::parse(url) {
            Ok(parsed) => format!(
                "{}://{}{}{}{}",
                parsed.scheme(),
                if parsed.username().is_empty() {
                    String::new()
                } else {
                    format!("{}@", parsed.username())
                },
                parsed.host_str().unwrap_or_default(),
                parsed
                    .port()
                    .map(|port| format!(":{port}"))
                    .unwrap_or_default(),
                parsed.path()
            ),
            Err(_) => "(unparsable url)".to_owned(),
        }
    }
}

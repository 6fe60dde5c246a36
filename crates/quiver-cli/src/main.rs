//! `quiver`: the command-line tool of the Quiver feature store.

mod access;
mod init;
mod offline;
mod online;
mod output;
mod remote;
mod report;
mod security;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use quiver_core::{DataSelection, Definitions, ObjectKind, now_nanos};
use quiver_registry::{Plan, Registry, RegistryVersion, RepoConfig, load_definitions};
use serde_json::{Value, json};

/// mimalloc: glibc's allocator spent a quarter of the server's time consolidating free lists
/// under load (gRPC and HTTP buffers of mixed sizes).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Quiver: a feature store with point-in-time-correct training sets and fast online reads.
#[derive(Parser, Debug)]
#[command(name = "quiver", version, propagate_version = true)]
struct Cli {
    /// The feature repository (the folder holding quiver.yaml).
    #[arg(
        short = 'r',
        long,
        global = true,
        env = "QUIVER_REPO",
        default_value = "."
    )]
    repo: PathBuf,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// The gRPC address of the `quiver serve` to go through (commands that need the online
    /// store find the one holding it on their own).
    #[arg(long, global = true, env = "QUIVER_SERVER")]
    server: Option<String>,
    /// How log lines look on stderr; which appear follows `RUST_LOG` (default `info`; e.g.
    /// `RUST_LOG=quiver::request=debug` logs every request).
    #[arg(long, global = true, env = "QUIVER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create an example feature repository with sample Parquet data.
    Init {
        /// Folder to create it in (default: the current folder).
        dir: Option<PathBuf>,
        /// Project name (default: the folder's name).
        #[arg(long)]
        project: Option<String>,
    },
    /// Validate the definition files and show what `apply` would change.
    Plan {
        /// Exit 0 when nothing would change, 2 when something would, 1 on an error (a gate for
        /// CI pipelines).
        #[arg(long)]
        exit_code: bool,
        /// With --exit-code: exit 3 when a change is breaking.
        #[arg(long, requires = "exit_code")]
        fail_on_breaking: bool,
    },
    /// Validate the definition files and register them as a new registry version.
    Apply {
        /// Author recorded with the new version.
        #[arg(long, env = "QUIVER_AUTHOR")]
        author: Option<String>,
    },
    /// List the registered objects of one kind.
    List {
        /// Which objects.
        kind: KindArg,
    },
    /// Show one registered object in full.
    Describe {
        /// The object's kind.
        kind: KindArg,
        /// The object's name.
        name: String,
    },
    /// Inspect the registry's history.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Load the latest row per entity key with START <= event time <= END into the online store.
    ///
    /// Times are RFC 3339 (2024-01-01T00:00:00Z), a date (midnight UTC), or `now`. When a
    /// `quiver serve` holds the store, the server runs it. `quiver materialize status` shows
    /// the recorded runs.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Materialize {
        #[command(subcommand)]
        command: Option<MaterializeCommand>,
        /// Window start (inclusive).
        #[arg(required = true)]
        start: Option<String>,
        /// Window end (inclusive).
        #[arg(required = true)]
        end: Option<String>,
        /// Only these feature views (default: every online view).
        #[arg(long, value_delimiter = ',')]
        views: Vec<String>,
        /// Where the newest rows are computed: native or spark (quiver.yaml's offline_engine
        /// by default).
        #[arg(long)]
        engine: Option<quiver_core::EngineKind>,
    },
    /// Materialize from each view's watermark (the previous END) up to END, then advance it.
    ///
    /// The first run starts at END minus the view's ttl (or at the earliest data when the ttl
    /// is 0).
    MaterializeIncremental {
        /// Window end (inclusive): RFC 3339, a date, or `now`.
        end: String,
        /// Only these feature views (default: every online view).
        #[arg(long, value_delimiter = ',')]
        views: Vec<String>,
        /// Re-read this far before the watermark, for late data (e.g. 2h).
        #[arg(long)]
        lookback: Option<String>,
        /// Where the newest rows are computed: native or spark (quiver.yaml's offline_engine
        /// by default).
        #[arg(long)]
        engine: Option<quiver_core::EngineKind>,
    },
    /// Build a point-in-time-correct training set from an entity table, in-process.
    ///
    /// The entity table (Parquet) holds every join key of the requested views, an event time
    /// (`event_timestamp`, else its only timestamp column) and any label columns.
    TrainingSet {
        /// Parquet file of entity rows.
        #[arg(long)]
        entities: PathBuf,
        /// Feature references, view:feature or view:* (comma-separated).
        #[arg(long, value_delimiter = ',', conflicts_with = "service")]
        features: Vec<String>,
        /// A feature service instead of --features.
        #[arg(long)]
        service: Option<String>,
        /// Name output columns view__feature.
        #[arg(long)]
        full_feature_names: bool,
        /// Ignore rows created after the entity row's time (no backfill leakage).
        #[arg(long)]
        as_of_created: bool,
        /// Memory for the join before it spills to disk, in MiB.
        #[arg(long, default_value_t = 4096)]
        memory_limit_mb: usize,
        /// Output Parquet file: a path, or a URL in object storage (`s3://bucket/train.parquet`).
        #[arg(long)]
        out: String,
        /// The engine that joins: native or spark (quiver.yaml's offline_engine by default).
        #[arg(long)]
        engine: Option<quiver_core::EngineKind>,
    },
    /// Serve online features (gRPC, HTTP), training sets (Arrow Flight) and the registry.
    ///
    /// Addresses come from quiver.yaml's `server:` section, then environment variables, then
    /// flags (later sources win); 0 picks a free port.
    Serve {
        /// Address to listen on [default: 127.0.0.1].
        #[arg(long, env = "QUIVER_HOST")]
        host: Option<std::net::IpAddr>,
        /// Online gRPC port, Quiver's and Feast's services [default: 6565].
        #[arg(long, env = "QUIVER_GRPC_PORT")]
        grpc_port: Option<u16>,
        /// Arrow Flight port [default: 8815].
        #[arg(long, env = "QUIVER_FLIGHT_PORT")]
        flight_port: Option<u16>,
        /// HTTP/JSON port, Feast's feature-server endpoints [default: 6566].
        #[arg(long, env = "QUIVER_HTTP_PORT")]
        http_port: Option<u16>,
        /// A port of its own for `GET /metrics`, without authentication, for scrapers
        /// [default: server.metrics_port, or none: `/metrics` on the HTTP port only].
        #[arg(long, env = "QUIVER_METRICS_PORT")]
        metrics_port: Option<u16>,
        /// Most entity rows in one online read or push [default: server.limits.max_rows, or
        /// 10000].
        #[arg(long)]
        max_rows: Option<usize>,
        /// Memory for each training-set join before it spills to disk, in MiB.
        #[arg(long, default_value_t = 4096)]
        memory_limit_mb: usize,
        /// Do not run the materialization schedules.
        #[arg(long)]
        no_schedule: bool,
    },
    /// Read online features from a running `quiver serve` (its gRPC API).
    GetOnline {
        /// Feature references, view:feature or view:* (comma-separated).
        #[arg(long, value_delimiter = ',', conflicts_with = "service")]
        features: Vec<String>,
        /// A feature service instead of --features.
        #[arg(long)]
        service: Option<String>,
        /// A join key and its values, e.g. driver_id=1001,1002; repeat for composite keys.
        #[arg(long = "entity", required = true)]
        entities: Vec<String>,
        /// Name outputs view__feature.
        #[arg(long)]
        full_feature_names: bool,
    },
    /// Show each online view's freshness (against its `freshness:`), online rows and last
    /// materialization. Exits 2 when a view is stale (a gate for cron and CI), 1 on an error.
    Status,
    /// Check what was served against what training sees.
    Monitor {
        #[command(subcommand)]
        command: MonitorCommand,
    },
    /// Read, back up and restore the online store (through the server that holds it, if one
    /// does).
    Online {
        #[command(subcommand)]
        command: OnlineCommand,
    },
    /// Explain the permissions of the latest registry version.
    Permissions {
        #[command(subcommand)]
        command: PermissionsCommand,
    },
    /// Bearer tokens for `server.auth: {type: token}`.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

/// A principal: its name, roles and groups.
#[derive(clap::Args, Debug)]
struct PrincipalArgs {
    /// The principal's name.
    #[arg(long)]
    principal: String,
    /// Its roles (comma-separated).
    #[arg(long, value_delimiter = ',')]
    roles: Vec<String>,
    /// Its groups (comma-separated).
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
}

impl PrincipalArgs {
    /// The principal these flags describe.
    fn principal(&self) -> quiver_ops::Principal {
        quiver_ops::Principal {
            name: self.principal.clone(),
            roles: self.roles.clone(),
            groups: self.groups.clone(),
        }
    }
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a token: prints it (give it to its holder) and the entry to add to the tokens
    /// file, which keeps only its hash.
    Create {
        #[command(flatten)]
        who: PrincipalArgs,
        /// How long the token is accepted, e.g. 90d (forever when unset).
        #[arg(long)]
        expires_in: Option<quiver_core::Period>,
    },
}

#[derive(Subcommand, Debug)]
enum PermissionsCommand {
    /// Whether a principal may do an action on an object, and which permission allows it;
    /// exits non-zero when nothing does.
    Check {
        #[command(flatten)]
        who: PrincipalArgs,
        /// create, describe, update, delete, read_online, read_offline, write_online or
        /// write_offline.
        #[arg(long)]
        action: String,
        /// KIND:NAME, e.g. feature_view:driver_hourly_stats.
        #[arg(long)]
        object: String,
    },
}

#[derive(Subcommand, Debug)]
enum MaterializeCommand {
    /// Show the recorded materialization runs, newest first: window, rows, time, outcome.
    Status {
        /// Only this feature view.
        #[arg(long)]
        view: Option<String>,
        /// At most this many runs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

#[derive(Subcommand, Debug)]
enum OnlineCommand {
    /// Show every feature of one entity key of a view, with statuses.
    Get {
        /// The feature view.
        #[arg(long)]
        view: String,
        /// A join key and its value, e.g. driver_id=1001; repeat for composite keys.
        #[arg(long = "key", required = true)]
        keys: Vec<String>,
    },
    /// Write a consistent copy of the online store to DIR (which must not exist).
    Backup {
        /// Target folder.
        dir: PathBuf,
    },
    /// Replace the online store with the backup in DIR (refused while a server holds the store).
    Restore {
        /// Backup folder.
        dir: PathBuf,
    },
    /// Show the store's size and each online view's watermark.
    Stats,
}

#[derive(Subcommand, Debug)]
enum MonitorCommand {
    /// Compare a feature service's logged reads with a training set of the same keys at the
    /// same times (a point-in-time join at each read's time): per feature, how often they
    /// agree and how. Exits 2 when a feature agrees less often than --min-match-rate.
    Skew {
        /// The feature service.
        #[arg(long)]
        service: String,
        /// The logged reads: a file, folder or glob under the data root (default: the
        /// service's `logging.destination`).
        #[arg(long)]
        logs: Option<String>,
        /// The least share of rows each feature must agree on.
        #[arg(long, default_value_t = 1.0)]
        min_match_rate: f64,
    },
    /// Feature statistics of a view's data: count, missing rate, min/max/mean/stddev,
    /// quantiles, distinct count, most frequent values. Kept beside the data
    /// (`<data root>/_profiles/`), so the same data is not read twice.
    Profile {
        /// The feature view.
        #[arg(long)]
        view: String,
        /// What to profile: a window of the view's source (`2024-01-01..2024-01-08`,
        /// `now-14d..now-7d`, or `7d` for the last seven days), or a training set or feature
        /// log under the data root (a file, folder or glob).
        #[arg(long)]
        data: DataSelection,
    },
    /// Compare a view's current data with a reference, feature by feature (PSI,
    /// Kolmogorov-Smirnov, Jensen-Shannon, chi-squared) under the view's `monitoring:`
    /// thresholds. Exits 2 when a feature drifted.
    Drift {
        /// The feature view.
        #[arg(long)]
        view: String,
        /// The reference: a window or a training set, as for `monitor profile --data`
        /// (default: the view's `monitoring.reference`).
        #[arg(long)]
        reference: Option<DataSelection>,
        /// The data to check, as for `monitor profile --data`.
        #[arg(long)]
        current: DataSelection,
        /// Also write a self-contained HTML report (histograms, scores, verdicts) here.
        #[arg(long)]
        html: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum RegistryCommand {
    /// List every version with its time, author and changes.
    Log,
    /// Show the complete definitions of one version.
    Show {
        /// Version number.
        #[arg(value_name = "VERSION")]
        number: u64,
    },
    /// Show what changed from one version to another.
    Diff {
        /// The older version.
        from: u64,
        /// The newer version.
        to: u64,
    },
}

/// A kind of object, singular or plural.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum KindArg {
    /// Entities.
    #[value(alias = "entity")]
    Entities,
    /// Sources.
    #[value(alias = "source")]
    Sources,
    /// Feature views.
    #[value(alias = "view", alias = "feature-view", alias = "feature-views")]
    Views,
    /// Feature services.
    #[value(
        alias = "service",
        alias = "feature-service",
        alias = "feature-services"
    )]
    Services,
    /// Permissions.
    #[value(alias = "permission")]
    Permissions,
}

impl KindArg {
    fn kind(self) -> ObjectKind {
        match self {
            Self::Entities => ObjectKind::Entity,
            Self::Sources => ObjectKind::Source,
            Self::Views => ObjectKind::FeatureView,
            Self::Services => ObjectKind::FeatureService,
            Self::Permissions => ObjectKind::Permission,
        }
    }
}

/// A command that succeeded but ends with this exit code (`plan --exit-code`).
#[derive(Debug)]
struct ExitWith(u8);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for ExitWith {}

/// How log lines look.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<ExitWith>() {
            Some(ExitWith(code)) => ExitCode::from(*code),
            None => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

pub(crate) fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A loaded repository: its settings and its registry.
struct Repo {
    path: PathBuf,
    config: RepoConfig,
    registry: Registry,
}

impl Repo {
    fn open(path: &Path) -> Result<Self> {
        let config = RepoConfig::load(path).with_context(|| {
            format!(
                "{} is not a feature repository (see `quiver init`)",
                path.display()
            )
        })?;
        let registry = config.open_registry(path, &config.storage())?;
        Ok(Self {
            path: path.to_path_buf(),
            config,
            registry,
        })
    }
}

fn run(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::Init { dir, project } => {
            let dir = dir.clone().unwrap_or_else(|| cli.repo.clone());
            let project = init::init(&dir, project.as_deref())?;
            if cli.json {
                print_json(&json!({"project": project, "path": dir}))
            } else {
                println!(
                    "Created feature repository '{project}' in {}.\nNext: quiver --repo {} plan",
                    dir.display(),
                    dir.display()
                );
                Ok(())
            }
        }
        Command::Plan {
            exit_code,
            fail_on_breaking,
        } => {
            let repo = Repo::open(&cli.repo)?;
            let (current, definitions) = load_with_current(&repo)?;
            let plan = plan_from(current.as_ref(), &definitions);
            if cli.json {
                print_json(&json!({
                    "project": repo.config.project,
                    "based_on": current.as_ref().map(|v| v.version),
                    "changes": plan.changes,
                }))?;
            } else {
                println!(
                    "Plan for project '{}' (registry version {}):",
                    repo.config.project,
                    current
                        .as_ref()
                        .map_or("none".to_owned(), |v| v.version.to_string())
                );
                print!("{}", output::plan(&plan));
            }
            if !exit_code || plan.is_empty() {
                Ok(())
            } else if *fail_on_breaking && plan.breaking().next().is_some() {
                Err(ExitWith(3).into())
            } else {
                Err(ExitWith(2).into())
            }
        }
        Command::Apply { author } => {
            let repo = Repo::open(&cli.repo)?;
            let (current, definitions) = load_with_current(&repo)?;
            apply(
                &repo,
                current.as_ref(),
                definitions,
                author.clone().unwrap_or_else(default_author),
                cli.json,
            )
        }
        Command::List { kind } => {
            let repo = Repo::open(&cli.repo)?;
            let defs = repo.registry.current()?.definitions;
            list(&defs, kind.kind(), cli.json)
        }
        Command::Describe { kind, name } => {
            let repo = Repo::open(&cli.repo)?;
            let defs = repo.registry.current()?.definitions;
            let value = object_json(&defs, kind.kind(), name)?;
            if cli.json {
                print_json(&value)
            } else {
                print!("{}", output::tree(&value));
                Ok(())
            }
        }
        Command::Registry { command } => {
            let repo = Repo::open(&cli.repo)?;
            registry_command(&repo.registry, command, cli.json)
        }
        Command::TrainingSet {
            entities,
            features,
            service,
            full_feature_names,
            as_of_created,
            memory_limit_mb,
            out,
            engine,
        } => {
            let repo = Repo::open(&cli.repo)?;
            let defs = repo.registry.current()?.definitions;
            let resolved = offline::resolve_features(
                &defs,
                features,
                service.as_deref(),
                *full_feature_names,
            )?;
            let options = quiver_offline::JoinOptions {
                as_of_created: *as_of_created,
                memory_limit: memory_limit_mb << 20,
                ..Default::default()
            };
            let spark = repo
                .config
                .offline_engine
                .select(*engine)?
                .map(|settings| quiver_spark::SparkEngine::new(settings.clone()))
                .transpose()?;
            let sources = repo.config.sources(&repo.path);
            let join = quiver_offline::PointInTimeJoin::new(&defs, &sources, resolved, options)?;
            offline::training_set(&join, entities, out, spark.as_ref(), cli.json)
        }
        Command::Serve {
            host,
            grpc_port,
            flight_port,
            http_port,
            metrics_port,
            max_rows,
            memory_limit_mb,
            no_schedule,
        } => {
            let repo = Repo::open(&cli.repo)?;
            let file = &repo.config.server;
            let mut options = quiver_server::ServeOptions::default();
            if let Some(h) = host {
                options.host = *h;
            } else if let Some(h) = &file.host {
                options.host = h.parse().with_context(|| {
                    format!("quiver.yaml: server.host '{h}' is not an IP address")
                })?;
            }
            options.grpc_port = grpc_port.or(file.grpc_port).unwrap_or(options.grpc_port);
            options.flight_port = flight_port
                .or(file.flight_port)
                .unwrap_or(options.flight_port);
            options.http_port = http_port.or(file.http_port).unwrap_or(options.http_port);
            options.metrics_port = metrics_port.or(file.metrics_port);
            options.join.memory_limit = memory_limit_mb << 20;
            options.schedule = !no_schedule;
            let limits = &file.limits;
            let connections = &mut options.connections;
            if let Some(n) = limits.max_connections {
                connections.max_connections = n;
            }
            if let Some(t) = limits.header_timeout {
                connections.header_timeout = t.0;
            }
            if let Some(t) = limits.idle_timeout {
                connections.idle_timeout = t.0;
            }
            let uploads = &mut options.uploads;
            if let Some(n) = limits.max_upload_rows {
                uploads.max_rows = n;
            }
            if let Some(mb) = limits.max_upload_mb {
                uploads.max_bytes = mb << 20;
            }
            if let Some(mb) = limits.max_pending_upload_mb {
                uploads.max_pending_bytes = mb << 20;
            }
            if let Some(tls) = &file.tls {
                options.tls = Some(quiver_server::connection::TlsFiles {
                    cert: repo.path.join(&tls.cert_file),
                    key: repo.path.join(&tls.key_file),
                    client_ca: tls.client_ca_file.as_ref().map(|f| repo.path.join(f)),
                });
            } else if !options.host.is_loopback() {
                eprintln!(
                    "warning: quiver serve listens on {} without TLS: anyone on the network can read and change what it serves; set server.tls in quiver.yaml",
                    options.host
                );
            }
            options.auth = std::sync::Arc::new(quiver_ops::Authenticator::from_config(
                &repo.path,
                file.auth.as_ref(),
            )?);
            let max_rows = max_rows
                .or(limits.max_rows)
                .unwrap_or(quiver_ops::Limits::default().max_rows);
            let mut feature_log = quiver_ops::FeatureLogOptions::default();
            let settings = &file.feature_log;
            if let Some(every) = settings.roll_every {
                feature_log.roll_every = every.0;
            }
            if let Some(rows) = settings.roll_rows {
                feature_log.roll_rows = rows;
            }
            if let Some(queue) = settings.queue {
                feature_log.queue = queue;
            }
            let store_options = quiver_ops::StoreOptions {
                limits: quiver_ops::Limits { max_rows },
                materialize_in_background: true,
                feature_log,
                metrics: file.metrics.unwrap_or(true),
                ..Default::default()
            };
            offline::serve_repo(&repo.path, store_options, options)
        }
        Command::GetOnline {
            features,
            service,
            entities,
            full_feature_names,
        } => {
            use quiver_server::proto::quiver::v1 as pb;
            // The repository (when there is one) gives key types and the default port.
            let repo = Repo::open(&cli.repo).ok();
            let defs = repo
                .as_ref()
                .and_then(|r| r.registry.latest().ok().flatten());
            let address = cli.server.clone().unwrap_or_else(|| {
                let file = repo
                    .as_ref()
                    .map(|r| r.config.server.clone())
                    .unwrap_or_default();
                format!(
                    "{}:{}",
                    file.host.unwrap_or_else(|| "127.0.0.1".into()),
                    file.grpc_port.unwrap_or(quiver_server::DEFAULT_GRPC_PORT)
                )
            });
            let spec = match (features.is_empty(), service) {
                (false, None) => {
                    pb::get_online_features_request::Features::FeatureRefs(pb::FeatureList {
                        refs: features.clone(),
                    })
                }
                (true, Some(s)) => {
                    pb::get_online_features_request::Features::FeatureService(s.clone())
                }
                _ => anyhow::bail!("give exactly one of --features and --service"),
            };
            let request = pb::GetOnlineFeaturesRequest {
                features: Some(spec),
                entities: remote::entity_columns(entities, defs.as_ref().map(|v| &v.definitions))?,
                full_feature_names: *full_feature_names,
            };
            remote::get_online(&address, request, cli.json)
        }
        Command::Materialize {
            command,
            start,
            end,
            views,
            engine,
        } => match command {
            Some(MaterializeCommand::Status { view, limit }) => online::materialize_status(
                &cli.repo,
                cli.server.as_deref(),
                view.as_deref(),
                *limit,
                cli.json,
            ),
            None => {
                let (Some(start), Some(end)) = (start, end) else {
                    anyhow::bail!("give START and END (or `materialize status`)");
                };
                let window = online::range_window(start, end)?;
                online::run_materialize(
                    &cli.repo,
                    cli.server.as_deref(),
                    views,
                    window,
                    *engine,
                    cli.json,
                )
            }
        },
        Command::MaterializeIncremental {
            end,
            views,
            lookback,
            engine,
        } => {
            let window = online::incremental_window(end, lookback.as_deref())?;
            online::run_materialize(
                &cli.repo,
                cli.server.as_deref(),
                views,
                window,
                *engine,
                cli.json,
            )
        }
        Command::Permissions {
            command:
                PermissionsCommand::Check {
                    who,
                    action,
                    object,
                },
        } => security::check(&Repo::open(&cli.repo)?, who, action, object, cli.json),
        Command::Token {
            command: TokenCommand::Create { who, expires_in },
        } => security::create_token(who, *expires_in, cli.json),
        Command::Online { command } => {
            let repo = Repo::open(&cli.repo)?;
            online_command(&repo, cli.server.as_deref(), command, cli.json)
        }
        Command::Monitor {
            command:
                MonitorCommand::Skew {
                    service,
                    logs,
                    min_match_rate,
                },
        } => {
            let repo = Repo::open(&cli.repo)?;
            let defs = repo.registry.current()?.definitions;
            let sources = repo.config.sources(&repo.path);
            let report = quiver_ops::skew::skew(&defs, &sources, service, logs.as_deref())?;
            output::skew(&report, cli.json)?;
            if report
                .features
                .iter()
                .any(|f| f.match_rate() < *min_match_rate)
            {
                Err(ExitWith(2).into())
            } else {
                Ok(())
            }
        }
        Command::Monitor {
            command: MonitorCommand::Profile { view, data },
        } => {
            let repo = Repo::open(&cli.repo)?;
            let defs = repo.registry.current()?.definitions;
            let sources = repo.config.sources(&repo.path);
            let profile =
                quiver_ops::profile::profile(&defs, &sources, view, data, now_nanos(), threads())?;
            output::profile(&profile, cli.json)
        }
        Command::Monitor {
            command:
                MonitorCommand::Drift {
                    view,
                    reference,
                    current,
                    html,
                },
        } => {
            let repo = Repo::open(&cli.repo)?;
            let defs = repo.registry.current()?.definitions;
            let sources = repo.config.sources(&repo.path);
            let (report, profiles) = quiver_ops::profile::drift(
                &defs,
                &sources,
                view,
                reference.as_ref(),
                current,
                now_nanos(),
                threads(),
            )?;
            if let Some(path) = html {
                std::fs::write(path, report::html(&report, &profiles))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            output::drift(&report, cli.json)?;
            if report.drifted() {
                Err(ExitWith(2).into())
            } else {
                Ok(())
            }
        }
        Command::Status => {
            let repo = Repo::open(&cli.repo)?;
            if online::status(&repo.path, cli.server.as_deref(), cli.json)? {
                Err(ExitWith(2).into())
            } else {
                Ok(())
            }
        }
    }
}

/// Workers of a profile: every core.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn online_command(
    repo: &Repo,
    server: Option<&str>,
    command: &OnlineCommand,
    as_json: bool,
) -> Result<()> {
    match command {
        OnlineCommand::Get { view, keys } => {
            online::online_get(&repo.path, &repo.registry, server, view, keys, as_json)
        }
        OnlineCommand::Backup { dir } => online::online_backup(&repo.path, server, dir),
        OnlineCommand::Restore { dir } => online::online_restore(&repo.path, &repo.config, dir),
        OnlineCommand::Stats => online::online_stats(&repo.path, server, as_json),
    }
}

/// `quiver apply`: registers the definitions and makes them current. With the store free,
/// this process deletes the online data the new version no longer serves; with a server
/// holding it, the server does when it picks the version up, and this waits for that.
fn apply(
    repo: &Repo,
    current: Option<&RegistryVersion>,
    definitions: Definitions,
    author: String,
    as_json: bool,
) -> Result<()> {
    use quiver_ops::{ApplyRequest, BaseVersion, FeatureStore, OpsError, StoreOptions};
    let request = ApplyRequest {
        definitions,
        based_on: BaseVersion::Version(current.map_or(0, |v| v.version)),
        author,
    };
    let runtime = access::Server::runtime()?;
    let server = access::running_server(&runtime, &repo.path, &repo.config);
    let local = match server {
        Some(_) => None,
        None => match FeatureStore::open(&repo.path, StoreOptions::default()) {
            Ok(store) => Some(store),
            Err(OpsError::Online(quiver_online::OnlineError::Locked { .. })) => None,
            Err(e) => return Err(e.into()),
        },
    };
    let (committed, deleted) = match &local {
        Some(store) => {
            let outcome = store.apply(&quiver_ops::Caller::Trusted, request)?;
            (outcome.committed, outcome.deleted_views)
        }
        None => {
            let committed = quiver_ops::commit(&repo.registry, request)?;
            let leaving = match (&committed.base, &committed.version) {
                (Some(base), Some(new)) => quiver_ops::views_leaving(base, new),
                _ => Vec::new(),
            };
            (committed, leaving)
        }
    };
    let Some(version) = &committed.version else {
        let stays = committed.base.as_ref().map(|v| v.version);
        if as_json {
            return print_json(&json!({"version": stays, "changes": []}));
        }
        println!(
            "No changes; project '{}' stays at registry version {}.",
            repo.config.project,
            stays.map_or("none".into(), |v| v.to_string())
        );
        return Ok(());
    };
    // The version is registered; a server that holds the store makes it current.
    let holder = match (&local, server) {
        (Some(_), _) => None,
        (None, Some(server)) => Some(wait_for_server(&runtime, &server, version.version)),
        (None, None) => Some(Err(anyhow::anyhow!(
            "the online store is held by another process; the online data of removed or changed views is deleted when a process holding the store opens this version"
        ))),
    };
    if as_json {
        return print_json(&json!({
            "version": version.version,
            "changes": version.changes,
            "online_views_deleted": deleted,
            "server": holder.as_ref().and_then(|h| h.as_ref().ok()),
        }));
    }
    print!("{}", output::plan(&committed.plan));
    for view in &deleted {
        println!("Deleted the online data of feature view '{view}'.");
    }
    match holder {
        Some(Ok(server)) => println!("{server} made the version current."),
        Some(Err(e)) => eprintln!("warning: {e:#}"),
        None => {}
    }
    println!(
        "Applied registry version {} of project '{}' (registry: {}).",
        version.version,
        repo.config.project,
        repo.config.registry_location(&repo.path)
    );
    Ok(())
}

/// Waits (up to ten seconds) until the server serves registry `version` or a later one.
fn wait_for_server(
    runtime: &tokio::runtime::Runtime,
    server: &access::Server,
    version: u64,
) -> Result<String> {
    use quiver_server::proto::quiver::v1 as pb;
    let mut client =
        pb::online_store_service_client::OnlineStoreServiceClient::new(server.channel.clone());
    let started = std::time::Instant::now();
    loop {
        let serving = runtime
            .block_on(client.get_stats(pb::GetStatsRequest {}))
            .map_err(|s| access::status_error(&s))?
            .into_inner()
            .registry_version;
        if serving >= version {
            return Ok(server.describe());
        }
        if started.elapsed() > std::time::Duration::from_secs(10) {
            anyhow::bail!(
                "{} did not pick up registry version {version} within 10 s (it serves {serving})",
                server.describe()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn load_with_current(repo: &Repo) -> Result<(Option<RegistryVersion>, Definitions)> {
    let sources = repo.config.sources(&repo.path);
    let definitions = load_definitions(&repo.path, &repo.config, &sources)?;
    let current = repo.registry.latest()?;
    Ok((current, definitions))
}

fn plan_from(current: Option<&RegistryVersion>, definitions: &Definitions) -> Plan {
    let empty = Definitions::default();
    Plan::between(current.map_or(&empty, |v| &v.definitions), definitions)
}

fn default_author() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

fn list(defs: &Definitions, kind: ObjectKind, as_json: bool) -> Result<()> {
    let (header, rows, values): (&[&str], Vec<Vec<String>>, Vec<Value>) = match kind {
        ObjectKind::Entity => (
            &["NAME", "JOIN KEYS", "DESCRIPTION"],
            defs.entities
                .values()
                .map(|e| {
                    let keys = e
                        .join_keys
                        .iter()
                        .map(|k| format!("{}: {}", k.name, k.key_type));
                    vec![
                        e.name.clone(),
                        keys.collect::<Vec<_>>().join(", "),
                        e.description.clone(),
                    ]
                })
                .collect(),
            defs.entities
                .values()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()?,
        ),
        ObjectKind::Source => (
            &["NAME", "PATH", "TIMESTAMP", "CREATED"],
            defs.sources
                .values()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.path.clone(),
                        s.timestamp_field.clone(),
                        s.created_timestamp_column
                            .clone()
                            .unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect(),
            defs.sources
                .values()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()?,
        ),
        ObjectKind::FeatureView => (
            &[
                "NAME", "ENTITIES", "SOURCE", "FEATURES", "TTL", "ONLINE", "OFFLINE",
            ],
            defs.feature_views
                .values()
                .map(|v| {
                    vec![
                        v.name.clone(),
                        v.entities.join(", "),
                        v.source.clone(),
                        v.features.len().to_string(),
                        v.ttl.to_string(),
                        v.online.to_string(),
                        v.offline.to_string(),
                    ]
                })
                .collect(),
            defs.feature_views
                .values()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()?,
        ),
        ObjectKind::FeatureService => (
            &["NAME", "FEATURES", "DESCRIPTION"],
            defs.feature_services
                .values()
                .map(|s| {
                    let refs = s.features.iter().map(ToString::to_string);
                    vec![
                        s.name.clone(),
                        refs.collect::<Vec<_>>().join(", "),
                        s.description.clone(),
                    ]
                })
                .collect(),
            defs.feature_services
                .values()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()?,
        ),
        ObjectKind::Permission => (
            &["NAME", "TYPES", "ACTIONS", "POLICY"],
            defs.permissions
                .values()
                .map(|p| {
                    let types: Vec<&str> = p.types.iter().map(|t| t.key()).collect();
                    let actions: Vec<&str> = p.actions.iter().map(|a| a.name()).collect();
                    let policy = match &p.policy {
                        quiver_core::Policy::Roles(r) => format!("roles: {}", r.join(", ")),
                        quiver_core::Policy::Groups(g) => format!("groups: {}", g.join(", ")),
                    };
                    vec![
                        p.name.clone(),
                        if types.is_empty() {
                            "all".into()
                        } else {
                            types.join(", ")
                        },
                        actions.join(", "),
                        policy,
                    ]
                })
                .collect(),
            defs.permissions
                .values()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()?,
        ),
    };
    if as_json {
        print_json(&values)
    } else {
        print!("{}", output::table(header, &rows));
        Ok(())
    }
}

fn object_json(defs: &Definitions, kind: ObjectKind, name: &str) -> Result<Value> {
    let value = match kind {
        ObjectKind::Entity => defs.entities.get(name).map(serde_json::to_value),
        ObjectKind::Source => defs.sources.get(name).map(serde_json::to_value),
        ObjectKind::FeatureView => defs.feature_views.get(name).map(serde_json::to_value),
        ObjectKind::FeatureService => defs.feature_services.get(name).map(serde_json::to_value),
        ObjectKind::Permission => defs.permissions.get(name).map(serde_json::to_value),
    };
    Ok(value
        .with_context(|| format!("project '{}' has no {kind} named '{name}'", defs.project))??)
}

fn registry_command(registry: &Registry, command: &RegistryCommand, as_json: bool) -> Result<()> {
    match command {
        RegistryCommand::Log => {
            let history = registry.history()?;
            if history.is_empty() {
                anyhow::bail!(
                    "project '{}' has no registry version yet; run `quiver apply` first",
                    registry.project()
                );
            }
            if as_json {
                let entries: Vec<Value> = history
                    .iter()
                    .map(|v| json!({"version": v.version, "created_at": v.created_at, "author": v.author, "changes": v.changes}))
                    .collect();
                return print_json(&entries);
            }
            let rows: Vec<Vec<String>> = history
                .iter()
                .rev()
                .map(|v| {
                    let plan = Plan {
                        changes: v.changes.clone(),
                    };
                    let (a, c, r) = plan.counts();
                    let names: Vec<String> = v
                        .changes
                        .iter()
                        .map(|c| format!("{}{}", c.action.symbol(), c.name))
                        .collect();
                    let mut objects = names.join(" ");
                    if objects.chars().count() > 60 {
                        objects = objects.chars().take(59).collect::<String>() + "…";
                    }
                    vec![
                        v.version.to_string(),
                        v.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                        v.author.clone(),
                        format!("+{a} ~{c} -{r}"),
                        objects,
                    ]
                })
                .collect();
            print!(
                "{}",
                output::table(
                    &["VERSION", "APPLIED", "AUTHOR", "CHANGES", "OBJECTS"],
                    &rows
                )
            );
            Ok(())
        }
        RegistryCommand::Show { number } => {
            let v = registry.get(*number)?;
            if as_json {
                return print_json(&v);
            }
            println!(
                "version: {}\napplied: {}\nauthor: {}",
                v.version,
                v.created_at.to_rfc3339(),
                v.author
            );
            print!("{}", output::tree(&serde_json::to_value(&v.definitions)?));
            Ok(())
        }
        RegistryCommand::Diff { from, to } => {
            let (a, b) = (registry.get(*from)?, registry.get(*to)?);
            let plan = Plan::between(&a.definitions, &b.definitions);
            if as_json {
                return print_json(&json!({"from": from, "to": to, "changes": plan.changes}));
            }
            println!(
                "Changes from version {from} to version {to} of project '{}':",
                registry.project()
            );
            print!("{}", output::plan(&plan));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}

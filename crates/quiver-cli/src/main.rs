//! `quiver`: the command-line tool of the Quiver feature store.

mod init;
mod offline;
mod online;
mod output;
mod remote;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use quiver_core::{Definitions, ObjectKind};
use quiver_online::OnlineStore;
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
    Plan,
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
    /// Times are RFC 3339 (2024-01-01T00:00:00Z), a date (midnight UTC), or `now`.
    Materialize {
        /// Window start (inclusive).
        start: String,
        /// Window end (inclusive).
        end: String,
        /// Only these feature views (default: every online view).
        #[arg(long, value_delimiter = ',')]
        views: Vec<String>,
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
        /// Output Parquet file.
        #[arg(long)]
        out: PathBuf,
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
        /// Most entity rows in one online read or push.
        #[arg(long, default_value_t = 10_000)]
        max_rows: usize,
        /// Memory for each training-set join before it spills to disk, in MiB.
        #[arg(long, default_value_t = 4096)]
        memory_limit_mb: usize,
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
        /// The server's gRPC address [default: 127.0.0.1 and the repository's gRPC port].
        #[arg(long, env = "QUIVER_SERVER")]
        server: Option<String>,
    },
    /// Read, back up and restore the online store directly (no server).
    Online {
        #[command(subcommand)]
        command: OnlineCommand,
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
    /// Replace the online store with the backup in DIR (stop servers using the store first).
    Restore {
        /// Backup folder.
        dir: PathBuf,
    },
    /// Show the store's size and each online view's watermark.
    Stats,
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
}

impl KindArg {
    fn kind(self) -> ObjectKind {
        match self {
            Self::Entities => ObjectKind::Entity,
            Self::Sources => ObjectKind::Source,
            Self::Views => ObjectKind::FeatureView,
            Self::Services => ObjectKind::FeatureService,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
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
        let registry = Registry::open_local(&config.registry_path(path), &config.project);
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
        Command::Plan => {
            let repo = Repo::open(&cli.repo)?;
            let (current, definitions) = load_with_current(&repo)?;
            let plan = plan_from(current.as_ref(), &definitions);
            if cli.json {
                return print_json(&json!({
                    "project": repo.config.project,
                    "based_on": current.as_ref().map(|v| v.version),
                    "changes": plan.changes,
                }));
            }
            println!(
                "Plan for project '{}' (registry version {}):",
                repo.config.project,
                current
                    .as_ref()
                    .map_or("none".to_owned(), |v| v.version.to_string())
            );
            print!("{}", output::plan(&plan));
            Ok(())
        }
        Command::Apply { author } => {
            let repo = Repo::open(&cli.repo)?;
            let (current, definitions) = load_with_current(&repo)?;
            let plan = plan_from(current.as_ref(), &definitions);
            let based_on = current.as_ref().map(|v| v.version);
            if plan.is_empty() {
                if cli.json {
                    return print_json(&json!({"version": based_on, "changes": []}));
                }
                println!(
                    "No changes; project '{}' stays at registry version {}.",
                    repo.config.project,
                    based_on.map_or("none".into(), |v| v.to_string())
                );
                return Ok(());
            }
            let author = author.clone().unwrap_or_else(default_author);
            let old = current.map(|v| v.definitions).unwrap_or_default();
            let version = repo.registry.commit(based_on, definitions, &author)?;
            // The new version is registered; failing to free old online data (e.g. a server
            // holds the store) must not make the apply look failed.
            let deleted = online::delete_stale_views(
                &repo.path,
                &repo.config,
                &old,
                &version.definitions,
            )
            .unwrap_or_else(|e| {
                eprintln!(
                    "warning: the online data of removed or changed views was not deleted: {e:#}"
                );
                Vec::new()
            });
            if cli.json {
                return print_json(
                    &json!({"version": version.version, "changes": version.changes, "online_views_deleted": deleted}),
                );
            }
            print!("{}", output::plan(&plan));
            for view in &deleted {
                println!("Deleted the online data of feature view '{view}'.");
            }
            println!(
                "Applied registry version {} of project '{}' (registry: {}).",
                version.version,
                repo.config.project,
                repo.config.registry_path(&repo.path).display()
            );
            Ok(())
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
            offline::training_set(
                &repo.config.data_root(&repo.path),
                &defs,
                resolved,
                entities,
                out,
                options,
                cli.json,
            )
        }
        Command::Serve {
            host,
            grpc_port,
            flight_port,
            http_port,
            max_rows,
            memory_limit_mb,
        } => {
            let repo = Repo::open(&cli.repo)?;
            let file = &repo.config.server;
            let mut options = quiver_server::ServeOptions::new(repo.config.data_root(&repo.path));
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
            options.limits.max_rows = *max_rows;
            options.join.memory_limit = memory_limit_mb << 20;
            offline::serve_repo(&repo.path, &repo.config, options)
        }
        Command::GetOnline {
            features,
            service,
            entities,
            full_feature_names,
            server,
        } => {
            use quiver_server::proto::quiver::v1 as pb;
            // The repository (when there is one) gives key types and the default port.
            let repo = Repo::open(&cli.repo).ok();
            let defs = repo
                .as_ref()
                .and_then(|r| r.registry.latest().ok().flatten());
            let address = server.clone().unwrap_or_else(|| {
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
        Command::Materialize { start, end, views } => {
            let repo = Repo::open(&cli.repo)?;
            let defs = repo.registry.current()?.definitions;
            let window = online::range_window(start, end)?;
            online::run_materialize(&repo.path, &repo.config, &defs, views, window, cli.json)
        }
        Command::MaterializeIncremental {
            end,
            views,
            lookback,
        } => {
            let repo = Repo::open(&cli.repo)?;
            let defs = repo.registry.current()?.definitions;
            let window = online::incremental_window(end, lookback.as_deref())?;
            online::run_materialize(&repo.path, &repo.config, &defs, views, window, cli.json)
        }
        Command::Online { command } => {
            let repo = Repo::open(&cli.repo)?;
            online_command(&repo, command, cli.json)
        }
    }
}

fn online_command(repo: &Repo, command: &OnlineCommand, as_json: bool) -> Result<()> {
    match command {
        OnlineCommand::Get { view, keys } => {
            let defs = repo.registry.current()?.definitions;
            online::online_get(&repo.path, &repo.config, &defs, view, keys, as_json)
        }
        OnlineCommand::Backup { dir } => {
            if dir.exists() {
                anyhow::bail!(
                    "{} already exists; choose a new folder for the backup",
                    dir.display()
                );
            }
            let store = online::open_store(&repo.path, &repo.config, None)?;
            store.backup(dir)?;
            println!("Backed up {} to {}.", store.path().display(), dir.display());
            Ok(())
        }
        OnlineCommand::Restore { dir } => {
            let path = repo.config.online_store_path(&repo.path);
            quiver_online::RocksDbStore::restore(dir, &path)?;
            println!("Restored {} from {}.", path.display(), dir.display());
            Ok(())
        }
        OnlineCommand::Stats => {
            let defs = repo.registry.current()?.definitions;
            let store = online::open_store(&repo.path, &repo.config, Some(&defs))?;
            let stats = store.stats()?;
            let mut watermarks = Vec::new();
            for view in defs.feature_views.values().filter(|v| v.online) {
                let wm = store.watermark(&defs.project, &view.name)?;
                let wm = wm
                    .and_then(chrono::DateTime::from_timestamp_micros)
                    .map(|t| t.to_rfc3339());
                watermarks.push((view.name.clone(), wm));
            }
            if as_json {
                return print_json(
                    &json!({"stats": stats, "watermarks": watermarks.iter().map(|(v, w)| json!({"view": v, "watermark": w})).collect::<Vec<_>>()}),
                );
            }
            println!(
                "estimated rows: {}\nSST bytes: {}\nmemtable bytes: {}",
                stats.estimated_rows, stats.sst_bytes, stats.memtable_bytes
            );
            let rows: Vec<Vec<String>> = watermarks
                .into_iter()
                .map(|(v, w)| vec![v, w.unwrap_or_else(|| "-".into())])
                .collect();
            print!("{}", output::table(&["VIEW", "WATERMARK"], &rows));
            Ok(())
        }
    }
}

fn load_with_current(repo: &Repo) -> Result<(Option<RegistryVersion>, Definitions)> {
    let definitions = load_definitions(&repo.path, &repo.config)?;
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

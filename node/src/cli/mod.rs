//! The `ecointegra` command-line tool.

mod actions;
mod backup;
mod directory;
mod evidence;
mod ops;
mod sector;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use ecointegra_broker::keys::SigningIdentity;
use ecointegra_node::config::Config;
use ecointegra_proto::v1::filing_service_client::FilingServiceClient;
use ecointegra_proto::v1::{
    Direction, DownloadDocumentRequest, Filing, FilingHeader, FilingStatus, GetFilingRequest,
    GetReceiptRequest, IdentityDocumentType, ListInboxRequest, Party, download_document_response,
};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::io::AsyncWriteExt;

/// Exit code for a configuration that cannot be used (EX_CONFIG is 78, but
/// EX_USAGE, 64, is what operators' scripts here check).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code when another process holds the node's data directory
/// (EX_TEMPFAIL: it can be started once that one stops).
pub const EXIT_DATA_DIR_IN_USE: u8 = 75;

#[derive(Parser)]
#[command(
    name = "ecointegra",
    version,
    about = "Moves official documents between the institutions of a sector over Apache Kafka."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an institution's node.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The sector directory: authority key, signed entries, publication.
    #[command(subcommand)]
    Directory(crate::cli::directory::DirectoryCommand),
    /// The sector operator's tools: provision the Kafka cluster (topics,
    /// users, ACLs) from the signed directory.
    #[command(subcommand)]
    Sector(crate::cli::sector::SectorCommand),
    /// Submit, read and download filings through a node's gRPC service.
    #[command(subcommand)]
    Filing(FilingCommand),
    /// Queues per institution (inbox lag, outbox, pending receipts, dead
    /// letters, last delivery, throughput) and the filings in trouble.
    Queues(crate::cli::ops::QueuesArgs),
    /// Send again, whole and now, a transfer still awaiting its receipt (one
    /// the relay stopped re-sending by itself), once the cause is fixed.
    Resend(crate::cli::ops::ResendArgs),
    /// Dead letters: list, show, replay once the cause is fixed, discard.
    #[command(subcommand)]
    Dlq(crate::cli::ops::DlqCommand),
    /// The node's audit log (operators): every state-changing call, who made
    /// it with which role, from which address, what it was about and how it
    /// ended, oldest first.
    Audit(crate::cli::ops::AuditArgs),
    /// Back the node up while it runs: a consistent snapshot of its store
    /// (SQLite's online backup) and every document it references, with a
    /// manifest of SHA-256s, into a backup set where documents are copied
    /// once. `backup verify DIR` checks a set or a snapshot.
    Backup(crate::cli::backup::BackupArgs),
    /// Restore a snapshot (or a set's newest) into the node's empty data
    /// directory; started, the node reads on from the positions it held.
    Restore(crate::cli::backup::RestoreArgs),
    /// Evidence bundles: `export` a filing's from a node, `verify` one
    /// offline with the sector authority's public key.
    #[command(subcommand)]
    Evidence(crate::cli::evidence::EvidenceCommand),
    /// Follow a filing across institutions with its tracking and verification codes.
    Track {
        /// Any institution's node, e.g. 127.0.0.1:50051.
        #[arg(long)]
        node: String,
        /// The verification code printed on the citizen's cargo.
        #[arg(long)]
        verification: String,
        tracking_code: String,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Run the node until SIGINT or SIGTERM.
    #[command(long_about = "Run the node until SIGINT or SIGTERM.\n\n\
        Configuration is layered: defaults, then the TOML file, then environment variables \
        ECOINTEGRA_<KEY>, with nested keys joined by '__', e.g. ECOINTEGRA_INSTITUTION, \
        ECOINTEGRA_DATA_DIR, ECOINTEGRA_GRPC__LISTEN, ECOINTEGRA_KAFKA__BOOTSTRAP_SERVERS, \
        ECOINTEGRA_KAFKA__TOPIC_PREFIX, ECOINTEGRA_TRANSFER__CHUNK_SIZE. \
        See deploy/config/node.example.toml. A bad configuration exits with code 64; a data directory another process holds, with code 75.")]
    Run {
        /// The node's TOML configuration file.
        #[arg(long, env = "ECOINTEGRA_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate an Ed25519 signing key into a new file; print its public key.
    Generate {
        /// Where to write the secret key (created with mode 0600; never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public key of a key file.
    Public {
        #[arg(long)]
        key: PathBuf,
    },
    /// Make a random API token for a client, and the `[[auth.tokens]]` entry
    /// (its SHA-256) for the node's config. Only the client keeps the token.
    Token {
        /// system, clerk, operator or public.
        #[arg(long)]
        role: String,
        /// Who holds it, for the node's logs.
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum FilingCommand {
    /// Submit a filing with its documents.
    Submit {
        /// The node's gRPC address, e.g. 127.0.0.1:50051.
        #[arg(long)]
        node: String,
        /// Destination institution id, e.g. oefa (a correction may omit it).
        #[arg(long, default_value = "")]
        to: String,
        /// Filing type, which sets the destination's response period.
        #[arg(long, default_value = "")]
        filing_type: String,
        /// Submit a correction (subsanación) of this observed filing.
        #[arg(long, default_value = "")]
        corrects: String,
        #[arg(long)]
        subject: String,
        /// The sender party's name.
        #[arg(long, default_value = "Ciudadano de prueba")]
        name: String,
        /// DNI, RUC or CE.
        #[arg(long, default_value = "dni")]
        doc_type: String,
        #[arg(long, default_value = "12345678")]
        doc_number: String,
        #[arg(long, default_value = "")]
        email: String,
        /// Number of folios (pages).
        #[arg(long, default_value_t = 1)]
        folios: u32,
        /// A retry with the same key returns the first answer.
        #[arg(long, default_value = "")]
        idempotency_key: String,
        /// The documents.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show a filing.
    Get {
        #[arg(long)]
        node: String,
        tracking_code: String,
        /// Which copy (a transfer id `get` lists); default: the copy this
        /// institution holds, or, if it never received it, what it sent.
        #[arg(long, default_value = "")]
        copy: String,
    },
    /// Download a filing's documents into a directory.
    Download {
        #[arg(long)]
        node: String,
        tracking_code: String,
        dir: PathBuf,
        /// Which copy's documents, as for `get`.
        #[arg(long, default_value = "")]
        copy: String,
    },
    /// List the filings delivered to the node's institution.
    Inbox {
        #[arg(long)]
        node: String,
        #[arg(long, default_value_t = 50)]
        page_size: u32,
    },
    /// Show a filing's signed delivery receipt (cargo de recepción).
    Receipt {
        #[arg(long)]
        node: String,
        tracking_code: String,
    },
    /// Verify and show every receipt of a filing: its chain of custody.
    Chain {
        #[arg(long)]
        node: String,
        tracking_code: String,
    },
    /// Take a delivered filing in, with this institution's registry number and office.
    Receive {
        #[command(flatten)]
        target: ActionTarget,
        #[arg(long)]
        registry_number: String,
        #[arg(long)]
        office: String,
    },
    /// Return a filing to its sender with a reason; the sender may correct it.
    Observe {
        #[command(flatten)]
        target: ActionTarget,
        #[arg(long)]
        reason: String,
    },
    /// Reject a filing with a reason.
    Reject {
        #[command(flatten)]
        target: ActionTarget,
        #[arg(long)]
        reason: String,
    },
    /// Forward a received filing to another institution.
    Forward {
        #[command(flatten)]
        target: ActionTarget,
        #[arg(long)]
        to: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Answer a received filing with response documents; they travel to the
    /// institution where it was filed.
    Answer {
        #[command(flatten)]
        target: ActionTarget,
        #[arg(long, default_value = "")]
        note: String,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Archive a filing.
    Archive {
        #[command(flatten)]
        target: ActionTarget,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// List filings held here that are overdue or due within some days.
    Due {
        #[arg(long)]
        node: String,
        #[arg(long, default_value_t = 3)]
        within: u32,
    },
}

/// The filing a clerk action applies to.
#[derive(clap::Args)]
pub(crate) struct ActionTarget {
    #[arg(long)]
    pub node: String,
    pub tracking_code: String,
    /// Makes the action idempotent: repeating it with the same id changes
    /// nothing. A fresh one is made (and printed) when omitted.
    #[arg(long)]
    pub action_id: Option<String>,
}

pub fn main() -> ExitCode {
    quiet_when_stdout_closes();
    let cli = Cli::parse();
    let untuned = match cli.command {
        Command::Node(NodeCommand::Run { .. }) => ecointegra_node::malloc::tune(),
        _ => None,
    };
    ecointegra_node::telemetry::trace::init_logging();
    if let Some(reason) = untuned {
        tracing::warn!("{reason}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    runtime.block_on(async {
        match run(cli.command).await {
            Ok(code) => code,
            Err(error) => {
                eprintln!("error: {error:#}");
                if error
                    .downcast_ref::<ecointegra_node::config::ConfigError>()
                    .is_some()
                {
                    ExitCode::from(EXIT_CONFIG)
                } else if let Some(ecointegra_node::error::Error::DataDirInUse { .. }) =
                    error.downcast_ref::<ecointegra_node::error::Error>()
                {
                    ExitCode::from(EXIT_DATA_DIR_IN_USE)
                } else {
                    ExitCode::FAILURE
                }
            }
        }
    })
}

/// Exit status of a command whose reader went away: what a shell reports
/// for a process ended by SIGPIPE (128 + 13).
const EXIT_STDOUT_CLOSED: i32 = 141;

/// A reader that stops early (`| head`, `| grep -q`) ends a command as it
/// ends any Unix tool: quietly, with status 141. Rust ignores SIGPIPE, so
/// `println!` to a closed pipe panics (a backtrace on the terminal, as
/// `deploy/demo.sh` showed); that panic, and only it, becomes the exit.
fn quiet_when_stdout_closes() {
    let before = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        // std's own words: "failed printing to stdout: Broken pipe (os error 32)".
        if message.starts_with("failed printing to stdout")
            && message.to_ascii_lowercase().contains("broken pipe")
        {
            std::process::exit(EXIT_STDOUT_CLOSED);
        }
        before(info);
    }));
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Node(NodeCommand::Run { config }) => {
            let config = Config::load(config.as_deref())?;
            // Installed first: a SIGTERM while the node starts stops it cleanly.
            let signalled = ecointegra_node::app::shutdown_signal();
            let node = ecointegra_node::Node::start(config)
                .await
                .context("the node could not start")?;
            let cancel = node.cancel_token();
            tokio::spawn(async move {
                signalled.await;
                tracing::info!("Shutdown requested.");
                cancel.cancel();
            });
            node.wait().await;
        }
        Command::Keys(KeysCommand::Generate { out }) => {
            let identity = SigningIdentity::generate();
            identity.save(&out)?;
            println!("{}", identity.public_key_hex());
        }
        Command::Keys(KeysCommand::Token { role, name }) => {
            if !["system", "clerk", "operator", "public"].contains(&role.as_str()) {
                anyhow::bail!("--role {role:?}: use system, clerk, operator or public");
            }
            let token = ecointegra_node::ids::random_code(32);
            let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()));
            println!("token: {token}");
            println!();
            println!(
                "[[auth.tokens]]\nname = \"{name}\"\nrole = \"{role}\"\ntoken_sha256 = \"{digest}\""
            );
        }
        Command::Keys(KeysCommand::Public { key }) => {
            println!("{}", SigningIdentity::load(&key)?.public_key_hex());
        }
        Command::Filing(command) => filing(command).await?,
        Command::Directory(command) => crate::cli::directory::run(command).await?,
        Command::Sector(command) => return crate::cli::sector::run(command).await,
        Command::Evidence(command) => return crate::cli::evidence::run(command).await,
        Command::Track {
            node,
            verification,
            tracking_code,
        } => crate::cli::actions::track(&node, &tracking_code, &verification).await?,
        Command::Queues(args) => crate::cli::ops::queues(args).await?,
        Command::Dlq(command) => crate::cli::ops::dlq(command).await?,
        Command::Resend(args) => crate::cli::ops::resend(args).await?,
        Command::Audit(args) => crate::cli::ops::audit(args).await?,
        Command::Backup(args) => crate::cli::backup::backup(args)?,
        Command::Restore(args) => crate::cli::backup::restore(args)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Adds the caller's API token (`ECOINTEGRA_TOKEN`) to every call.
#[derive(Clone)]
pub struct TokenInterceptor {
    header: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl TokenInterceptor {
    /// From `ECOINTEGRA_TOKEN`, if set.
    pub fn from_env() -> anyhow::Result<Self> {
        let header = match std::env::var("ECOINTEGRA_TOKEN") {
            Ok(token) if !token.trim().is_empty() => Some(
                format!("Bearer {}", token.trim())
                    .parse()
                    .map_err(|_| anyhow::anyhow!("ECOINTEGRA_TOKEN is not a valid header value"))?,
            ),
            _ => None,
        };
        Ok(Self { header })
    }
}

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

pub type AuthChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, TokenInterceptor>;

/// A channel to a node, authenticated with `ECOINTEGRA_TOKEN` if set.
pub(crate) async fn channel(node: &str) -> anyhow::Result<AuthChannel> {
    let uri = if node.contains("://") {
        node.to_owned()
    } else {
        format!("http://{node}")
    };
    let channel = tonic::transport::Endpoint::from_shared(uri.clone())?
        .connect()
        .await
        .with_context(|| format!("cannot connect to the node at {uri}"))?;
    Ok(tonic::service::interceptor::InterceptedService::new(
        channel,
        TokenInterceptor::from_env()?,
    ))
}

pub(crate) async fn connect(node: &str) -> anyhow::Result<FilingServiceClient<AuthChannel>> {
    Ok(FilingServiceClient::new(channel(node).await?).max_decoding_message_size(8 << 20))
}

fn parse_doc_type(text: &str) -> anyhow::Result<IdentityDocumentType> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "dni" => IdentityDocumentType::Dni,
        "ruc" => IdentityDocumentType::Ruc,
        "ce" => IdentityDocumentType::Ce,
        other => bail!("--doc-type {other:?}: use dni, ruc or ce"),
    })
}

async fn filing(command: FilingCommand) -> anyhow::Result<()> {
    match command {
        FilingCommand::Submit {
            node,
            to,
            subject,
            name,
            doc_type,
            doc_number,
            email,
            folios,
            idempotency_key,
            files,
            filing_type,
            corrects,
        } => {
            for file in &files {
                if !file.is_file() {
                    bail!("{} is not a readable file", file.display());
                }
            }
            let header = FilingHeader {
                destination: to,
                subject,
                sender_party: Some(Party {
                    name,
                    document_type: parse_doc_type(&doc_type)? as i32,
                    document_number: doc_number,
                    email,
                }),
                folio_count: folios,
                idempotency_key,
                filing_type,
                corrects_tracking_code: corrects,
                sgd: None,
            };
            let mut client = connect(&node).await?;
            let answer = client
                .submit_filing(ecointegra_node::grpc::client::submission_stream(
                    header, files,
                ))
                .await
                .map_err(describe_status)?
                .into_inner();
            println!("tracking code:     {}", answer.tracking_code);
            println!("verification code: {}", answer.verification_code);
            for doc in &answer.documents {
                println!(
                    "document {}: {} ({} bytes) sha256 {}",
                    doc.index, doc.name, doc.size, doc.sha256
                );
            }
        }
        FilingCommand::Get {
            node,
            tracking_code,
            copy,
        } => {
            let filing = connect(&node)
                .await?
                .get_filing(GetFilingRequest {
                    tracking_code,
                    transfer_id: copy,
                })
                .await
                .map_err(describe_status)?
                .into_inner();
            print_filing(&filing);
        }
        FilingCommand::Download {
            node,
            tracking_code,
            dir,
            copy,
        } => {
            let mut client = connect(&node).await?;
            let filing = client
                .get_filing(GetFilingRequest {
                    tracking_code: tracking_code.clone(),
                    transfer_id: copy,
                })
                .await
                .map_err(describe_status)?
                .into_inner();
            tokio::fs::create_dir_all(&dir).await?;
            for doc in &filing.documents {
                let mut stream = client
                    .download_document(DownloadDocumentRequest {
                        tracking_code: tracking_code.clone(),
                        document_index: doc.index,
                        // The copy `get_filing` answered with, whichever it was.
                        transfer_id: filing.transfer_id.clone(),
                    })
                    .await
                    .map_err(describe_status)?
                    .into_inner();
                let (path, file) = create_inside(&dir, &doc.name, doc.index)?;
                let mut file = tokio::fs::File::from_std(file);
                let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
                while let Some(part) = stream.message().await.map_err(describe_status)? {
                    if let Some(download_document_response::Part::Chunk(data)) = part.part {
                        sha2::Digest::update(&mut hasher, &data);
                        file.write_all(&data).await?;
                    }
                }
                file.sync_all().await?;
                let digest = hex::encode(sha2::Digest::finalize(hasher));
                if digest != doc.sha256 {
                    bail!(
                        "{}: downloaded SHA-256 {digest} differs from {}",
                        path.display(),
                        doc.sha256
                    );
                }
                println!(
                    "{} ({} bytes, sha256 {digest} verified)",
                    path.display(),
                    doc.size
                );
            }
        }
        FilingCommand::Inbox { node, page_size } => {
            let page = connect(&node)
                .await?
                .list_inbox(ListInboxRequest {
                    page_size,
                    page_token: String::new(),
                })
                .await
                .map_err(describe_status)?
                .into_inner();
            if page.filings.is_empty() {
                println!("The inbox is empty.");
            }
            for f in &page.filings {
                println!(
                    "{:<24} {:<10} from {:<10} {:<18} {}",
                    f.tracking_code,
                    status_name(f.status),
                    f.origin,
                    f.registry_number,
                    f.subject
                );
            }
        }
        FilingCommand::Receipt {
            node,
            tracking_code,
        } => {
            let answer = connect(&node)
                .await?
                .get_receipt(GetReceiptRequest { tracking_code })
                .await
                .map_err(describe_status)?
                .into_inner();
            let receipt = answer.receipt.unwrap_or_default();
            println!("Cargo de recepción (delivery receipt)");
            println!("  tracking code:   {}", receipt.tracking_code);
            println!("  transfer:        {}", receipt.transfer_id);
            println!("  received by:     {}", receipt.receiving_institution);
            println!("  registry number: {}", receipt.registry_number);
            println!(
                "  received at:     {}",
                ecointegra_node::ids::format_utc(receipt.received_at_ms)
            );
            for doc in &receipt.documents {
                println!(
                    "  document {}: {} ({} bytes) sha256 {}",
                    doc.index,
                    doc.name,
                    doc.size,
                    hex::encode(&doc.sha256)
                );
            }
            println!(
                "  signed by:       {} (Ed25519 {})",
                answer.signer,
                hex::encode(&answer.signer_public_key)
            );
            println!(
                "  verified:        {}",
                if answer.verified { "yes" } else { "NO" }
            );
        }
        other => crate::cli::actions::run(other).await?,
    }
    Ok(())
}

pub(crate) fn status_name(status: i32) -> &'static str {
    FilingStatus::try_from(status)
        .map(FilingStatus::short_name)
        .unwrap_or("UNKNOWN")
}

pub(crate) fn print_filing(f: &Filing) {
    println!("tracking code:   {}", f.tracking_code);
    println!("copy:            {}", copy_name(f));
    println!("status:          {}", status_name(f.status));
    println!("from:            {}", f.origin);
    println!("to:              {}", f.destination);
    println!("subject:         {}", f.subject);
    println!("registry number: {}", f.registry_number);
    println!("folios:          {}", f.folio_count);
    for doc in &f.documents {
        println!(
            "document {}: {} ({} bytes) sha256 {}",
            doc.index, doc.name, doc.size, doc.sha256
        );
    }
    if f.copies.len() > 1 {
        println!("copies here (--copy TRANSFER_ID):");
        for c in &f.copies {
            let counterpart = if c.direction == Direction::Inbound as i32 {
                format!("received from {}", c.counterpart)
            } else {
                format!("sent to {}", c.counterpart)
            };
            println!(
                "  {} hop {}: {counterpart}, {}",
                c.transfer_id,
                c.hop,
                status_name(c.status)
            );
        }
    }
}

/// Creates the file a downloaded document is written to: inside `dir`
/// whatever name the node gave (only its last component, and a plain one:
/// `../x` becomes `x`, a name with nothing usable `document-N`), never over
/// an existing file: a second `a.pdf` becomes `a (2).pdf`.
fn create_inside(
    dir: &std::path::Path,
    name: &str,
    index: u32,
) -> anyhow::Result<(PathBuf, std::fs::File)> {
    let base = std::path::Path::new(name)
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.trim_start_matches('.'))
        .filter(|n| !n.is_empty() && !n.chars().any(char::is_control))
        .map_or_else(|| format!("document-{index}"), str::to_owned);
    let (stem, extension) = match base.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem.to_owned(), format!(".{ext}")),
        _ => (base.clone(), String::new()),
    };
    for n in 1..10_000 {
        let candidate = if n == 1 {
            dir.join(&base)
        } else {
            dir.join(format!("{stem} ({n}){extension}"))
        };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate)
        {
            Ok(file) => return Ok((candidate, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => bail!("cannot create {}: {e}", candidate.display()),
        }
    }
    bail!(
        "{} already holds 9,999 files named like {base}",
        dir.display()
    )
}

/// Which copy a filing is: the one this institution received, or the
/// record of what it sent.
fn copy_name(f: &Filing) -> String {
    let (id, hop) = (&f.transfer_id, f.hop);
    if f.direction == Direction::Inbound as i32 {
        format!("received from {} (transfer {id}, hop {hop})", f.origin)
    } else {
        format!("sent to {} (transfer {id}, hop {hop})", f.destination)
    }
}

/// A gRPC error in words, with the fields a BadRequest names.
pub(crate) fn describe_status(status: tonic::Status) -> anyhow::Error {
    use tonic_types::StatusExt;
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(bad) = status.get_details_bad_request() {
        for v in bad.field_violations {
            text.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    anyhow::anyhow!(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_stay_inside_the_directory_and_never_overwrite() {
        let dir = std::env::temp_dir().join(format!("ecointegra-download-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("kept.pdf"), b"already here").unwrap();
        let names = [
            "a.pdf",
            "a.pdf",
            "../../etc/passwd",
            "/tmp/abs.pdf",
            "..",
            ".bashrc",
            "kept.pdf",
        ];
        let made: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let (path, _) = create_inside(&dir, name, i as u32).unwrap();
                assert_eq!(path.parent(), Some(dir.as_path()), "{name}");
                path.file_name().unwrap().to_string_lossy().into_owned()
            })
            .collect();
        assert_eq!(
            made,
            [
                "a.pdf",
                "a (2).pdf",
                "passwd",
                "abs.pdf",
                "document-4",
                "bashrc",
                "kept (2).pdf"
            ]
        );
        assert_eq!(
            std::fs::read(dir.join("kept.pdf")).unwrap(),
            b"already here"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

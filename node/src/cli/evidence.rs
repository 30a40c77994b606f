//! `ecointegra evidence`: export a filing's evidence bundle from a node, and
//! verify one offline.

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};
use ecointegra_node::evidence::verify::{Lang, verify};
use ecointegra_proto::v1::ExportEvidenceRequest;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum EvidenceCommand {
    /// Write a filing's evidence bundle (a ZIP file): every signed receipt of
    /// its chain of custody, every signed step of its timeline, the sector
    /// authority's signed directory entry of every signer and, with
    /// --with-documents, the documents. Authenticates with ECOINTEGRA_TOKEN.
    Export {
        /// The node holding the filing, e.g. 127.0.0.1:50051.
        #[arg(long)]
        node: String,
        tracking_code: String,
        /// Where to write the bundle (not overwritten).
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        with_documents: bool,
    },
    /// Check a bundle offline with nothing but the sector authority's public
    /// key: a verdict per step; exits 1 if any check fails.
    Verify {
        bundle: PathBuf,
        /// The sector authority's Ed25519 public key (hex).
        #[arg(long)]
        authority_public_key: String,
        #[arg(long, value_enum, default_value = "es")]
        lang: Language,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Language {
    Es,
    En,
}

pub(crate) async fn run(command: EvidenceCommand) -> anyhow::Result<ExitCode> {
    match command {
        EvidenceCommand::Export {
            node,
            tracking_code,
            out,
            with_documents,
        } => {
            let mut client = crate::cli::connect(&node).await?;
            let mut stream = client
                .export_evidence(ExportEvidenceRequest {
                    tracking_code,
                    with_documents,
                })
                .await?
                .into_inner();
            let partial = out.with_extension("part");
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&partial)
                .with_context(|| format!("cannot create {}", partial.display()))?;
            let mut size = 0u64;
            while let Some(piece) = stream.message().await? {
                file.write_all(&piece.data)?;
                size += piece.data.len() as u64;
            }
            file.sync_all()?;
            if out.exists() {
                let _ = std::fs::remove_file(&partial);
                bail!("{} exists; it is not overwritten", out.display());
            }
            std::fs::rename(&partial, &out)?;
            println!("{} ({size} bytes)", out.display());
            Ok(ExitCode::SUCCESS)
        }
        EvidenceCommand::Verify {
            bundle,
            authority_public_key,
            lang,
        } => {
            let authority = ecointegra_broker::keys::parse_public_key(&authority_public_key)
                .map_err(|e| anyhow::anyhow!("--authority-public-key: {e}"))?;
            let lang = match lang {
                Language::Es => Lang::Es,
                Language::En => Lang::En,
            };
            let checks = verify(&bundle, &authority, lang).map_err(|e| anyhow::anyhow!(e))?;
            let failed = checks.iter().filter(|c| !c.ok).count();
            for check in &checks {
                println!("{} {}", if check.ok { "✓" } else { "✗" }, check.text);
            }
            let total = checks.len();
            println!();
            match (failed, lang) {
                (0, Lang::Es) => println!(
                    "Veredicto: la evidencia es íntegra ({total} comprobaciones correctas)."
                ),
                (0, Lang::En) => {
                    println!("Verdict: the evidence is intact ({total} checks passed).")
                }
                (n, Lang::Es) => println!(
                    "Veredicto: la evidencia NO es íntegra: {n} de {total} comprobaciones fallaron."
                ),
                (n, Lang::En) => {
                    println!("Verdict: the evidence is NOT intact: {n} of {total} checks failed.")
                }
            }
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

//! `phalanx-crds`: writes (or checks) the Helm chart's CRD files, generated
//! from the Rust types in `phalanx-api`.
//!
//! ```text
//! cargo run -p phalanx-api --bin phalanx-crds -- write            # regenerate
//! cargo run -p phalanx-api --bin phalanx-crds -- check            # exit 1 on drift
//! cargo run -p phalanx-api --bin phalanx-crds -- print            # all, to stdout
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use phalanx_api::crds::{all_crds, crd_file_text, CHART_CRD_DIR, REGENERATE_COMMAND};

const USAGE: &str = "usage: phalanx-crds write|check|print [--dir DIR]\n\
    DIR defaults to the chart's CRD directory in this workspace";

fn default_dir() -> PathBuf {
    // api/ is one level below the workspace root.
    let api = Path::new(env!("CARGO_MANIFEST_DIR"));
    api.parent().unwrap_or(api).join(CHART_CRD_DIR)
}

fn run(args: &[String]) -> Result<bool, String> {
    let (command, rest) = args.split_first().ok_or_else(|| USAGE.to_owned())?;
    let dir = match rest {
        [] => default_dir(),
        [flag, dir] if flag == "--dir" => PathBuf::from(dir),
        _ => return Err(USAGE.to_owned()),
    };
    let files = all_crds()
        .into_iter()
        .map(|g| match crd_file_text(&g.crd) {
            Ok(text) => Ok((g.file_name, text)),
            Err(e) => Err(format!("serialising {}: {e}", g.file_name)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    match command.as_str() {
        "print" => {
            for (_, text) in &files {
                print!("---\n{text}");
            }
            Ok(true)
        }
        "write" => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            for (name, text) in &files {
                let path = dir.join(name);
                std::fs::write(&path, text)
                    .map_err(|e| format!("writing {}: {e}", path.display()))?;
                println!("wrote {}", path.display());
            }
            Ok(true)
        }
        "check" => {
            let mut clean = true;
            for (name, text) in &files {
                let path = dir.join(name);
                let current = std::fs::read_to_string(&path).unwrap_or_default();
                if current != *text {
                    eprintln!(
                        "{} is out of date; run `{REGENERATE_COMMAND}`",
                        path.display()
                    );
                    clean = false;
                }
            }
            Ok(clean)
        }
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("phalanx-crds: {message}");
            ExitCode::from(2)
        }
    }
}

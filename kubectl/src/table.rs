//! Tables as kubectl prints them (upper-case headers, columns aligned with
//! spaces, no borders), and the pieces of text `why` and `sim` share.

use comfy_table::{presets, Table};
use phalanx_api::{AssignedGpu, SchedulingDecision};

/// `header` over `rows`, one line each, ending in a newline.
pub fn render<R>(header: &[&str], rows: impl IntoIterator<Item = R>) -> String
where
    R: IntoIterator<Item = String>,
{
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_header(header.to_vec());
    for row in rows {
        table.add_row(row.into_iter().collect::<Vec<_>>());
    }
    // comfy-table pads each cell by one space on both sides; kubectl starts
    // at the margin and ends lines without trailing blanks.
    let mut out = String::new();
    for line in table.lines() {
        out.push_str(line.strip_prefix(' ').unwrap_or(&line).trim_end());
        out.push('\n');
    }
    out
}

/// GPUs as `GPU 0 (1000 milli), GPU 3 (250 milli)`.
pub fn gpu_list(gpus: &[AssignedGpu]) -> String {
    gpus.iter()
        .map(|g| format!("GPU {} ({} milli)", g.index, g.milli))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A decision's nodes per first failed check as a table, then the nearest
/// node and what it lacks; what `why` and `sim` both print.
pub fn reasons_and_nearest(decision: &SchedulingDecision) -> String {
    let mut out = String::new();
    if !decision.reasons.is_empty() {
        out.push('\n');
        out.push_str(&render(
            &["NODES", "FIRST FAILED CHECK"],
            decision
                .reasons
                .iter()
                .map(|(reason, n)| vec![n.to_string(), reason.clone()]),
        ));
    }
    if let Some(nearest) = &decision.nearest {
        out.push_str(&format!("\nNearest node: {}, which lacks:\n", nearest.name));
        for lack in &nearest.lacks {
            out.push_str(&format!("  - {lack}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_without_borders() {
        let text = render(
            &["NODE", "GPUS"],
            [
                vec!["gpu-a".to_owned(), "8".to_owned()],
                vec!["a-much-longer-name".to_owned(), "4".to_owned()],
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("NODE"), "{text}");
        let column = lines[0].find("GPUS").unwrap();
        assert_eq!(lines[1].find('8'), Some(column), "{text}");
        assert_eq!(lines[2].find('4'), Some(column), "{text}");
        assert!(lines.iter().all(|l| !l.ends_with(' ')), "{text}");
    }
}

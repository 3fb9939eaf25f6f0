//! Tables as kubectl prints them: upper-case headers, columns aligned with
//! spaces, no borders.

use comfy_table::{presets, Table};

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

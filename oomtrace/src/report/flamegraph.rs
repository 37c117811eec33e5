//! A flame-graph SVG of folded stacks, drawn by inferno.
//!
//! The input is [`super::folded`]'s text; the width of a frame is its bytes. With nothing to draw
//! (every count zero) the SVG says so rather than failing, so a clean run still writes a file.

use anyhow::{Context as _, bail};
use inferno::flamegraph::{self, Options, Palette, color::BasicPalette};

/// Renders folded stack lines (`a;b;c 123`) as a flame-graph SVG titled `title`, counted in bytes.
pub fn to_svg(folded: &str, title: &str) -> anyhow::Result<Vec<u8>> {
    // inferno adds the counts up in a u64: refuse what would overflow rather than wrap.
    let mut total: u64 = 0;
    for line in folded.lines() {
        let n = line
            .trim()
            .rsplit_once(' ')
            .and_then(|(_, n)| n.parse::<u64>().ok())
            .unwrap_or(0);
        total = match total.checked_add(n) {
            Some(t) => t,
            None => bail!("the stacks' byte counts add up to more than 2^64: cannot draw them"),
        };
    }
    if total == 0 {
        return Ok(empty_svg(title).into_bytes());
    }
    let mut opts = Options::default();
    opts.title = title.to_owned();
    opts.count_name = "bytes".to_owned();
    opts.colors = Palette::Basic(BasicPalette::Mem);
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut opts, folded.lines(), &mut svg)
        .context("drawing the flame graph")?;
    Ok(svg)
}

/// A small SVG with the title and a note that no stack holds any bytes.
fn empty_svg(title: &str) -> String {
    format!(
        concat!(
            "<?xml version=\"1.0\" standalone=\"no\"?>\n",
            "<svg version=\"1.1\" width=\"1200\" height=\"80\" viewBox=\"0 0 1200 80\" ",
            "xmlns=\"http://www.w3.org/2000/svg\">",
            "<rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#eeeeee\"/>",
            "<text x=\"600\" y=\"24\" font-family=\"Verdana\" font-size=\"17\" ",
            "text-anchor=\"middle\">{}</text>",
            "<text x=\"600\" y=\"56\" font-family=\"Verdana\" font-size=\"12\" ",
            "text-anchor=\"middle\">No stack holds any bytes: nothing to draw.</text>",
            "</svg>\n"
        ),
        xml_escape(title)
    )
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::folded::{FoldedValue, tests::two_leaks, to_folded};

    const TITLE: &str = "oomtrace: outstanding bytes";

    fn text(svg: &[u8]) -> &str {
        std::str::from_utf8(svg).expect("the SVG is UTF-8")
    }

    #[test]
    fn draws_the_leaks() {
        let folded = to_folded(&two_leaks(42, 0), FoldedValue::Outstanding);
        let svg = to_svg(&folded, TITLE).expect("draws");
        let svg = text(&svg);
        assert!(
            svg.starts_with("<?xml") || svg.starts_with("<svg"),
            "{}",
            &svg[..80]
        );
        assert!(svg.contains("leak_a"), "leak_a missing");
        assert!(svg.contains("leak_b"), "leak_b missing");
        assert!(svg.contains(TITLE));
        assert!(svg.contains("10,000 bytes"), "counts are in bytes");
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn nothing_to_draw() {
        for input in ["", "\n\n", "a;b 0\n", "no count here\n"] {
            let svg = to_svg(input, "<a & b>").expect("an empty graph is not an error");
            let svg = text(&svg);
            assert!(svg.starts_with("<?xml"));
            assert!(svg.contains("&lt;a &amp; b&gt;"), "{svg}");
        }
    }

    #[test]
    fn odd_input_does_not_panic() {
        let max = u64::MAX;
        assert!(to_svg(&format!("a {max}\nb 1\n"), TITLE).is_err());
        let svg = to_svg(&format!("a;b {max}\n"), TITLE).expect("one huge stack draws");
        assert!(text(&svg).contains(">b<") || text(&svg).contains("b ("));
        let odd = "  ;; 5\n;a 3\nb; 2\nc 1 2\n<x>&y 4\n\u{1f600};\u{0} 9\n";
        let svg = to_svg(odd, TITLE).expect("draws");
        assert!(text(&svg).contains("&lt;x&gt;&amp;y"));
    }
}

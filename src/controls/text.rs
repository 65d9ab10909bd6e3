//! Graph's HTML texts (`description`, `implementationStatus`, `remediation`, …) as plain text:
//! tags stripped, entities decoded, whitespace collapsed, bounded in length.
//!
//! Why not a DOM parser (html5ever, scraper) or html2text: these texts are a paragraph or a
//! short list, often broken (unclosed tags, unquoted attributes, a trailing `<p><strong>`),
//! and nothing of their structure is needed beyond line breaks. A tag stripper of a few lines
//! does that; entities are decoded by `html-escape`, which knows every named entity of HTML5
//! (`&nbsp;`, `&rsquo;`, `&hellip;`…) and numeric ones. The result is text, never HTML: a `<`
//! that starts no tag stays a `<`, and an entity such as `&lt;p&gt;` becomes the text `<p>`.

/// Stands for one number in a [`Template`]'s text: a private-use character.
const NUMBER_MARK: char = '\u{E001}';

/// Most numbers a [`Template`] takes out of a text.
pub(crate) const TEMPLATE_NUMBERS: usize = 3;

/// A text with its numbers taken out (`You have \u{E001} of \u{E001} users`, `[3, 120]`), so
/// that tenants whose texts differ only in their counts share one copy of the words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    /// The text, a [`NUMBER_MARK`] where each number was.
    pub text: String,
    /// The numbers, in order.
    pub numbers: [u32; TEMPLATE_NUMBERS],
    /// How many of `numbers` are used.
    pub len: u8,
}

impl Template {
    /// `text` with up to [`TEMPLATE_NUMBERS`] whole numbers taken out. A text with more, or
    /// with a number that would not read back the same (a leading zero, above `u32::MAX`),
    /// keeps all its digits. A mark the text holds already becomes U+FFFD: every mark in a
    /// template is a number taken out.
    pub fn of(text: &str) -> Self {
        let sanitized;
        let text = if text.contains(NUMBER_MARK) {
            sanitized = text.replace(NUMBER_MARK, "\u{FFFD}");
            sanitized.as_str()
        } else {
            text
        };
        let whole = || Template {
            text: text.to_owned(),
            numbers: [0; TEMPLATE_NUMBERS],
            len: 0,
        };
        let mut out = String::with_capacity(text.len());
        let mut numbers = [0; TEMPLATE_NUMBERS];
        let mut len = 0;
        let mut rest = text;
        while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
            out.push_str(&rest[..start]);
            let digits = &rest[start..];
            let end = digits
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(digits.len());
            let run = &digits[..end];
            let number = run.parse::<u32>().ok().filter(|n| n.to_string() == run);
            match (number, numbers.get_mut(len)) {
                (Some(number), Some(slot)) => {
                    *slot = number;
                    len += 1;
                    out.push(NUMBER_MARK);
                }
                _ => return whole(),
            }
            rest = &digits[end..];
        }
        out.push_str(rest);
        Template {
            text: out,
            numbers,
            len: u8::try_from(len).unwrap_or(0),
        }
    }
}

/// Whether `template` has numbers taken out ([`Template::of`]).
pub(crate) fn has_number_marks(template: &str) -> bool {
    template.contains(NUMBER_MARK)
}

/// `template` with its marks replaced by `numbers`, in order.
pub(crate) fn fill(template: &str, numbers: &[u32]) -> String {
    let mut out = String::with_capacity(template.len() + numbers.len() * 4);
    let mut numbers = numbers.iter();
    for c in template.chars() {
        if c == NUMBER_MARK {
            if let Some(number) = numbers.next() {
                out.push_str(&number.to_string());
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Elements whose start or end begins a new line.
const BLOCKS: &[&str] = &[
    "br",
    "p",
    "div",
    "ul",
    "ol",
    "tr",
    "table",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "section",
    "hr",
];

/// Elements whose content is not text.
const HIDDEN: &[&str] = &["script", "style", "head", "title"];

/// `html` as plain text: one line per paragraph, line break or list item (items start with
/// `- `), spaces collapsed, no blank lines, at most `max_chars` characters (cut with `…`).
pub fn plain_text(html: &str, max_chars: usize) -> String {
    let stripped = strip_tags(html);
    let decoded = html_escape::decode_html_entities(&stripped);
    let mut out = String::with_capacity(decoded.len().min(max_chars.saturating_mul(4)));
    for line in decoded.split('\n') {
        // `split_whitespace` also splits on the no-break space `&nbsp;` decodes to.
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() || words == ["-"] {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&words.join(" "));
    }
    truncate(out, max_chars)
}

fn truncate(text: String, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text,
        Some((cut, _)) => {
            let mut short = text[..cut].trim_end().to_owned();
            short.pop();
            short.push('…');
            short
        }
    }
}

/// `html` with its tags and comments removed and block boundaries as `\n` (entities untouched).
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let starts_tag = after
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '/' | '!' | '?'));
        if !starts_tag {
            out.push('<');
            rest = after;
            continue;
        }
        if let Some(comment) = after.strip_prefix("!--") {
            // An unclosed comment hides the rest, as browsers do.
            rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
            continue;
        }
        let Some(close) = after.find('>') else {
            // A tag cut off at the end of the text: drop it.
            rest = "";
            break;
        };
        let tag = &after[..close];
        rest = &after[close + 1..];
        let closing = tag.starts_with('/');
        let name = tag
            .trim_start_matches('/')
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if HIDDEN.contains(&name.as_str()) && !closing {
            let end = format!("</{name}");
            rest = find_ignoring_case(rest, &end).map_or("", |at| {
                let tail = &rest[at..];
                tail.find('>').map_or("", |gt| &tail[gt + 1..])
            });
            continue;
        }
        if name == "li" && !closing {
            out.push_str("\n- ");
        } else if BLOCKS.contains(&name.as_str()) || name == "li" {
            out.push('\n');
        } else if matches!(name.as_str(), "td" | "th") {
            out.push(' ');
        }
    }
    out.push_str(rest);
    out
}

/// Byte position of `needle` (ASCII) in `haystack`, ignoring ASCII case.
fn find_ignoring_case(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|window| window.eq_ignore_ascii_case(needle.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_go_entities_are_decoded_and_lines_follow_blocks() {
        let html = "<p> 100% of users are affected by policies that are configured securely&nbsp;</p><ul><li>Default - 1 users (100%)&nbsp;</li></ul>";
        assert_eq!(
            plain_text(html, 1000),
            "100% of users are affected by policies that are configured securely\n- Default - 1 users (100%)"
        );
        let html = "\n\t\t\tIdle session sign-out warns users.\n            <br/>\n\t\t\tIt keeps data safe.\n\t\t";
        assert_eq!(
            plain_text(html, 1000),
            "Idle session sign-out warns users.\nIt keeps data safe."
        );
        assert_eq!(
            plain_text(
                "Set &ldquo;Quarantine&rdquo; &amp; don&#39;t &lsquo;allow&rsquo; &hellip;",
                1000
            ),
            "Set “Quarantine” & don't ‘allow’ …"
        );
    }

    #[test]
    fn broken_html_still_gives_text() {
        // Unquoted attributes, an unclosed tag at the end, a `<` that is no tag, entities of
        // markup, a comment, a script.
        let html = "Open <a href=https://example.com/x?a=1&b=2>the center</a> if a < b.<!-- note --><script>alert(1)</script> &lt;p&gt; stays <p><strong";
        assert_eq!(
            plain_text(html, 1000),
            "Open the center if a < b. <p> stays"
        );
        assert_eq!(plain_text("", 10), "");
        assert_eq!(plain_text("<p><br/></p>", 10), "");
        assert_eq!(plain_text("<!-- open", 10), "");
    }

    #[test]
    fn a_text_holding_the_mark_itself_reads_back_without_invented_numbers() {
        let text = format!("odd {NUMBER_MARK} char, 2 users");
        let template = Template::of(&text);
        let filled = fill(&template.text, &template.numbers);
        assert_eq!(filled, "odd \u{FFFD} char, 2 users");
    }

    #[test]
    fn templates_take_numbers_out_and_give_them_back() {
        for text in [
            "You have 3 out of 120 users that aren’t covered.",
            "50% of users (50%) - 6 users",
            "No number at all",
            "007 agents",
            "1 2 3 4 numbers",
            "99999999999 is too large",
            "7.5 of 10",
            "",
        ] {
            let template = Template::of(text);
            let numbers = &template.numbers[..usize::from(template.len)];
            assert_eq!(fill(&template.text, numbers), text);
        }
        let a = Template::of("You have 3 out of 120 users.");
        let b = Template::of("You have 0 out of 7 users.");
        assert_eq!(a.text, b.text);
        assert_eq!((a.len, &a.numbers[..2]), (2, &[3, 120][..]));
        assert_eq!(Template::of("1 2 3 4 numbers").len, 0);
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        let text = plain_text(&"é".repeat(50), 10);
        assert_eq!(text.chars().count(), 10);
        assert!(text.ends_with('…'));
        assert_eq!(plain_text("short", 10), "short");
    }
}

//! The text form of a keyword list, in both directions: how an import splits
//! a list cell (spec §2) and how an export joins a list (spec §7), so that an
//! exported list re-imports unchanged.
//!
//! - [`join_list`] joins the elements with `, ` (spec §7). Inside an element,
//!   `\`, `,` and `;` get a backslash before them (`R&D\, Europe`). A list
//!   none of whose elements holds one of these three is written exactly as
//!   spec §7 says, byte for byte.
//! - [`split_list`] reads `\\`, `\,` and `\;` as the character itself; any
//!   other backslash is an ordinary character (`C:\data` stays as it is). It
//!   splits on the unescaped `;` when there is one, otherwise on the
//!   unescaped `,`; parts are trimmed and empty parts dropped (spec §2).
//!
//! Every list an import can store (elements trimmed and non-empty) survives
//! a join and a split: `split_list(&join_list(items)) == items`.
//!
//! Hand-written: the format is the spec's own (`, ` / `;` with the spec's
//! trimming), which no CSV or escaping crate implements.

/// What [`join_list`] puts between two elements (spec §7).
pub const SEPARATOR: &str = ", ";

/// The character that escapes the next `\`, `,` or `;` of an element.
const ESCAPE: char = '\\';

/// Whether `c` is escaped inside an element: the escape itself and the two
/// characters a list cell may be split on.
fn is_escaped(c: char) -> bool {
    matches!(c, ESCAPE | ',' | ';')
}

/// A list's elements as one cell: joined with [`SEPARATOR`], each `\`, `,`
/// and `;` inside an element escaped with a backslash.
pub fn join_list<I>(items: I) -> String
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    let mut out = String::new();
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push_str(SEPARATOR);
        }
        for c in item.as_ref().chars() {
            if is_escaped(c) {
                out.push(ESCAPE);
            }
            out.push(c);
        }
    }
    out
}

/// A cell's characters, each with whether a backslash escaped it (`\\`, `\,`
/// and `\;` are one escaped character; any other backslash is itself).
fn characters(cell: &str) -> impl Iterator<Item = (char, bool)> + '_ {
    let mut chars = cell.chars().peekable();
    std::iter::from_fn(move || {
        let c = chars.next()?;
        if c == ESCAPE {
            if let Some(next) = chars.next_if(|&n| is_escaped(n)) {
                return Some((next, true));
            }
        }
        Some((c, false))
    })
}

/// Splits a list cell on its unescaped `;` when it has one, otherwise on its
/// unescaped `,`; parts are trimmed and empty parts dropped, and `\\`, `\,`
/// and `\;` become `\`, `,` and `;`.
pub fn split_list(cell: &str) -> Vec<String> {
    let trimmed = |part: &str| {
        let part = part.trim();
        (!part.is_empty()).then(|| part.to_string())
    };
    if !cell.contains(ESCAPE) {
        // nothing escaped: the plain split (the common case, without a copy per character)
        let sep = if cell.contains(';') { ';' } else { ',' };
        return cell.split(sep).filter_map(trimmed).collect();
    }
    let sep = if characters(cell).any(|c| c == (';', false)) {
        ';'
    } else {
        ','
    };
    let mut items = Vec::new();
    let mut part = String::with_capacity(cell.len());
    for (c, escaped) in characters(cell) {
        if c == sep && !escaped {
            items.extend(trimmed(&part));
            part.clear();
        } else {
            part.push(c);
        }
    }
    items.extend(trimmed(&part));
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_on_semicolons_first_then_commas() {
        assert_eq!(split_list("a; b,c ;; "), ["a", "b,c"]);
        assert_eq!(split_list(" x , y ,"), ["x", "y"]);
        assert!(split_list(" ").is_empty());
    }

    #[test]
    fn plain_lists_join_with_comma_space_as_the_spec_says() {
        assert_eq!(join_list(["SaaS", "Software"]), "SaaS, Software");
        assert_eq!(join_list(["Zoë", "大塚"]), "Zoë, 大塚");
        assert_eq!(join_list(Vec::<String>::new()), "");
    }

    #[test]
    fn commas_semicolons_and_backslashes_in_elements_are_escaped() {
        assert_eq!(
            join_list(["R&D, Europe", "a;b", r"C:\data"]),
            r"R&D\, Europe, a\;b, C:\\data"
        );
        assert_eq!(
            split_list(r"R&D\, Europe, a\;b, C:\\data"),
            ["R&D, Europe", "a;b", r"C:\data"]
        );
    }

    #[test]
    fn a_backslash_before_any_other_character_is_kept() {
        assert_eq!(split_list(r"C:\data, \n"), [r"C:\data", r"\n"]);
        assert_eq!(split_list(r"trailing\"), [r"trailing\"]);
        // an escaped `;` does not make the cell split on `;`
        assert_eq!(split_list(r"a\;b, c"), ["a;b", "c"]);
        // an unescaped one does, and commas are then part of the elements
        assert_eq!(split_list(r"a, b; c\; d"), ["a, b", "c; d"]);
    }

    /// Every string of up to `len` characters from `alphabet`.
    fn strings(alphabet: &[char], len: usize) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..len {
            last = last
                .iter()
                .flat_map(|s| {
                    alphabet.iter().map(move |c| {
                        let mut t = s.clone();
                        t.push(*c);
                        t
                    })
                })
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn every_list_an_import_can_store_survives_a_join_and_a_split() {
        // elements are trimmed and non-empty, as split_list leaves them
        let elements: Vec<String> = strings(&['a', ',', ';', '\\', ' '], 4)
            .into_iter()
            .filter(|s| !s.is_empty() && s.trim() == s)
            .collect();
        for a in &elements {
            assert_eq!(
                split_list(&join_list([a])),
                std::slice::from_ref(a),
                "{a:?}"
            );
            for b in elements.iter().filter(|b| b.len() <= 3) {
                let list = [a.clone(), b.clone()];
                assert_eq!(split_list(&join_list(&list)), list, "{list:?}");
            }
        }
    }
}

//! Where each value of a YAML document is: an index from field paths (`spec.vendors[1].name`, the
//! same form serde_path_to_error prints) to line and column. serde drops positions once a value is
//! deserialized, so checks that look at several values at once (a vendor defined twice, a rule
//! that shadows another) use this index to name every place involved.
//!
//! The same walk bounds how deeply a document nests ([`MAX_DEPTH`]) before serde_yaml_ng reads
//! it: libyaml (under serde_yaml_ng) and yaml_rust2 scan their whole stack of open flow
//! collections at each token, so nesting costs quadratic time (200,000 `[` took minutes), and
//! yaml_rust2's loader recurses per level (a few thousand levels overflowed the stack).

use std::{collections::HashMap, fmt};

use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser},
    scanner::Marker,
};

/// Line and column (both from 1) of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// How deeply collections may nest in a policy or configuration document. A policy needs 7
/// levels (`spec.vendors[].processes[].pod_labels`).
pub const MAX_DEPTH: usize = 64;

/// A document nests deeper than [`MAX_DEPTH`]: where the first collection too deep opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooDeep {
    pub pos: Pos,
}

impl fmt::Display for TooDeep {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "nested deeper than {MAX_DEPTH} levels")
    }
}

/// One index per YAML document of a text, in document order; refused when the text nests too
/// deeply for the YAML parsers to be given it.
pub fn index_documents(text: &str) -> Result<Vec<HashMap<String, Pos>>, TooDeep> {
    let mut w = Walker::default();
    walk(text, |ev, mark| w.on_event(ev, mark))?;
    Ok(w.docs)
}

/// Whether a text nests too deeply for the YAML parsers (for texts that are not indexed: the
/// agent's configuration).
pub fn check_depth(text: &str) -> Result<(), TooDeep> {
    walk(text, |_, _| {})
}

fn pos_of(mark: Marker) -> Pos {
    Pos { line: mark.line(), column: mark.col() + 1 }
}

/// Feeds every event of every document to `on`, counting open collections; stops, refused, at
/// the first one deeper than [`MAX_DEPTH`]. A syntax error stops the walk (serde reports it with
/// its own position, and the documents indexed so far stay usable); what follows is bounded by
/// [`flow_depth_after`], since libyaml may read further than yaml_rust2 did.
fn walk(text: &str, mut on: impl FnMut(Event, Marker)) -> Result<(), TooDeep> {
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    // Where the parser had got to: the last event's place, the depth there, and whether that
    // event opened a collection (its bracket, if any, is counted in the depth).
    let mut last = Resume { index: 0, pos: Pos { line: 1, column: 1 }, depth: 0, opened: false };
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => return Ok(()),
            Ok((ev, mark)) => {
                match ev {
                    Event::MappingStart(..) | Event::SequenceStart(..) => {
                        depth += 1;
                        if depth > MAX_DEPTH {
                            return Err(TooDeep { pos: pos_of(mark) });
                        }
                    }
                    Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
                    _ => {}
                }
                let opened = matches!(ev, Event::MappingStart(..) | Event::SequenceStart(..));
                last = Resume { index: mark.index(), pos: pos_of(mark), depth, opened };
                on(ev, mark);
            }
            Err(_) => return flow_depth_after(text, &last),
        }
    }
}

/// Where the event walk stopped: the last event's place (`index` in characters, as yaml_rust2
/// counts), the depth there, and whether that event opened a collection.
struct Resume {
    index: usize,
    pos: Pos,
    depth: usize,
    opened: bool,
}

/// After a syntax error, a conservative bound by the text alone: from the parser's last place,
/// every `[` and `{` outside quoted scalars and comments opens one more collection, every `]`
/// and `}` closes one. It may count a bracket inside a plain or block scalar (only in a text that
/// does not parse anyway); block nesting past the error is left to libyaml, whose cost for it is
/// linear and whose deserializer stops at 128 levels.
fn flow_depth_after(text: &str, from: &Resume) -> Result<(), TooDeep> {
    let (mut line, mut col) = (from.pos.line, from.pos.column - 1);
    let mut depth = from.depth;
    let mut chars = text.chars().skip(from.index).peekable();
    let mut prev = ' ';
    if from.opened && matches!(chars.peek(), Some('[' | '{')) {
        // The collection's own bracket, counted already.
        if let Some(c) = chars.next() {
            (line, col, prev) = advance(line, col, c);
        }
    }
    let mut quote: Option<char> = None;
    let mut comment = false;
    while let Some(c) = chars.next() {
        let here = Pos { line, column: col + 1 };
        match (quote, c) {
            (_, '\n') => comment = false,
            _ if comment => {}
            (Some('"'), '\\') => {
                // An escape: the next character is literal (an escaped quote does not end it).
                if let Some(n) = chars.next() {
                    (line, col, _) = advance(line, col, c);
                    (line, col, prev) = advance(line, col, n);
                    continue;
                }
            }
            (Some('\''), '\'') if chars.peek() == Some(&'\'') => {
                // `''` is a quote inside a single-quoted scalar.
                chars.next();
                (line, col, _) = advance(line, col, c);
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') if prev.is_whitespace() || "[{,:".contains(prev) => quote = Some(c),
            (None, '#') if prev.is_whitespace() => comment = true,
            (None, '[' | '{') => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(TooDeep { pos: here });
                }
            }
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            (None, _) => {}
        }
        (line, col, prev) = advance(line, col, c);
    }
    Ok(())
}

/// The place after `c`, and `c`.
fn advance(line: usize, col: usize, c: char) -> (usize, usize, char) {
    if c == '\n' {
        (line + 1, 0, c)
    } else {
        (line, col + 1, c)
    }
}

enum Frame {
    Map { key: Option<String> },
    Seq { index: usize },
}

#[derive(Default)]
struct Walker {
    docs: Vec<HashMap<String, Pos>>,
    stack: Vec<Frame>,
}

impl Walker {
    fn path(&self) -> String {
        let mut p = String::new();
        for f in &self.stack {
            match f {
                Frame::Map { key: Some(k) } => {
                    if !p.is_empty() {
                        p.push('.');
                    }
                    p.push_str(k);
                }
                Frame::Map { key: None } => {}
                Frame::Seq { index } => p.push_str(&format!("[{index}]")),
            }
        }
        p
    }

    fn value_start(&mut self, mark: Marker) {
        let path = self.path();
        if let Some(doc) = self.docs.last_mut() {
            doc.entry(path).or_insert(Pos { line: mark.line(), column: mark.col() + 1 });
        }
    }

    fn value_end(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key }) => *key = None,
            Some(Frame::Seq { index }) => *index += 1,
            None => {}
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::DocumentStart => {
                self.docs.push(HashMap::new());
                self.stack.clear();
            }
            Event::Scalar(value, ..) => {
                if let Some(Frame::Map { key }) = self.stack.last_mut() {
                    if key.is_none() {
                        *key = Some(value);
                        return;
                    }
                }
                self.value_start(mark);
                self.value_end();
            }
            Event::Alias(_) => {
                self.value_start(mark);
                self.value_end();
            }
            Event::MappingStart(..) => {
                self.value_start(mark);
                self.stack.push(Frame::Map { key: None });
            }
            Event::SequenceStart(..) => {
                self.value_start(mark);
                self.stack.push(Frame::Seq { index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_end();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_serde_path_to_error_and_positions_are_one_based() {
        let docs = index_documents(
            "a: 1\nspec:\n  vendors:\n    - name: x\n      ports: [1, 2]\n    - {name: y}\n---\nb: 2\n",
        )
        .expect("shallow");
        assert_eq!(docs.len(), 2);
        let d = &docs[0];
        assert_eq!(d["a"], Pos { line: 1, column: 4 });
        assert_eq!(d["spec.vendors[0].name"], Pos { line: 4, column: 13 });
        assert_eq!(d["spec.vendors[0].ports[1]"], Pos { line: 5, column: 18 });
        assert_eq!(d["spec.vendors[1].name"].line, 6);
        assert_eq!(docs[1]["b"].line, 8);
    }

    /// The first error of `parse` on `text`, and how long it took.
    fn refused(text: &str) -> (String, std::time::Duration) {
        let started = std::time::Instant::now();
        let e = crate::policy::parse("p.yaml", text).expect_err("refused");
        (e[0].to_string(), started.elapsed())
    }

    #[test]
    fn deep_flow_nesting_is_refused_at_once_with_its_place() {
        for (text, place) in [
            ("[".repeat(200_000), "p.yaml:1:65:"),
            ("{a: ".repeat(100_000), "p.yaml:1:257:"),
            (format!("spec:\n  allow: {}", "[".repeat(100_000)), "p.yaml:2:72:"),
        ] {
            let (e, took) = refused(&text);
            assert!(e.starts_with(place) && e.contains("nested deeper than 64 levels"), "{e}");
            assert!(took < std::time::Duration::from_secs(1), "{took:?}");
        }
    }

    #[test]
    fn deep_block_nesting_is_refused_not_a_stack_overflow() {
        // Indentation, and compact sequences on one line: both nest without a bracket.
        let indented: String = (0..3000).map(|i| format!("{}a:\n", " ".repeat(i))).collect();
        let (e, _) = refused(&indented);
        assert!(e.starts_with("p.yaml:65:") && e.contains("nested deeper than 64 levels"), "{e}");
        let (e, took) = refused(&format!("{}x\n", "- ".repeat(100_000)));
        assert!(e.starts_with("p.yaml:1:") && e.contains("nested deeper than 64 levels"), "{e}");
        assert!(took < std::time::Duration::from_secs(1), "{took:?}");
    }

    #[test]
    fn nesting_up_to_the_limit_and_brackets_in_scalars_are_fine() {
        let ok = format!("{}{}\n", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(check_depth(&ok).is_ok());
        let e =
            check_depth(&format!("{}{}\n", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1))).expect_err("deep");
        assert_eq!(e.pos, Pos { line: 1, column: MAX_DEPTH + 1 });
        // Brackets inside quoted and plain scalars, comments and block scalars are not nesting.
        let many = "[".repeat(200);
        let text = format!("a: '{many}'\nb: \"{many}\"\nc: x{many}\n# {many}\nd: |\n  {many}\n");
        assert!(check_depth(&text).is_ok());
    }

    #[test]
    fn nesting_after_a_syntax_error_is_bounded_too() {
        // The mapping open at the error counts: 1 + 64 brackets.
        let e = check_depth(&format!("a: b: c\n{}\n", "[".repeat(200_000))).expect_err("deep");
        assert_eq!(e.pos, Pos { line: 2, column: MAX_DEPTH });
        assert!(check_depth(&format!("a: b: c\n{}\n", "[".repeat(MAX_DEPTH - 1))).is_ok());
        let quoted = format!(
            "a: b: c\nd: ['{}', \"{}\\\"{}\"] # {}\n",
            "[".repeat(100),
            "[".repeat(100),
            "[".repeat(100),
            "[".repeat(100)
        );
        assert!(check_depth(&quoted).is_ok());
        // Through `parse`: refused at once whichever parser stops first.
        let text = format!("a: *nope\nb: {}\n", "[".repeat(200_000));
        let (e, took) = refused(&text);
        assert!(took < std::time::Duration::from_secs(1), "{took:?}: {e}");
    }
}

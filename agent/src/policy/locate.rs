//! Where each value of a YAML document is: an index from field paths (`spec.vendors[1].name`, the
//! same form serde_path_to_error prints) to line and column. serde drops positions once a value is
//! deserialized, so checks that look at several values at once (a vendor defined twice, a rule
//! that shadows another) use this index to name every place involved.

use std::collections::HashMap;

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

/// One index per YAML document of a text, in document order.
pub fn index_documents(text: &str) -> Vec<HashMap<String, Pos>> {
    let mut w = Walker::default();
    // A syntax error stops the walk; serde reports it with its own position, and the documents
    // indexed so far stay usable.
    let _ = Parser::new_from_str(text).load(&mut w, true);
    w.docs
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
        );
        assert_eq!(docs.len(), 2);
        let d = &docs[0];
        assert_eq!(d["a"], Pos { line: 1, column: 4 });
        assert_eq!(d["spec.vendors[0].name"], Pos { line: 4, column: 13 });
        assert_eq!(d["spec.vendors[0].ports[1]"], Pos { line: 5, column: 18 });
        assert_eq!(d["spec.vendors[1].name"].line, 6);
        assert_eq!(docs[1]["b"].line, 8);
    }
}

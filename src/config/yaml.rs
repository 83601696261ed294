//! How deep YAML text nests, asked of the parser serde_yaml uses before
//! serde_yaml loads it.
//!
//! libyaml takes time quadratic in the depth of nested flow collections
//! (`[[[[...` or `{a: {a: ...`), and serde_yaml's loader parses a whole
//! document before its own depth limit (128) applies: a 200 KB file took a
//! minute to refuse. [`check_depth`] runs the same parser event by event and
//! stops at the first collection deeper than the limit, so it costs what
//! the first few levels cost. Being the same parser, it cannot disagree with
//! serde_yaml about where a collection starts, as a scan of the text could.
//!
//! This is the crate's only unsafe code: unsafe-libyaml is a line-by-line
//! translation of libyaml's C API.

#![allow(unsafe_code)]

use std::marker::PhantomData;
use std::mem::MaybeUninit;

use unsafe_libyaml::{
    YAML_MAPPING_END_EVENT, YAML_MAPPING_START_EVENT, YAML_SEQUENCE_END_EVENT,
    YAML_SEQUENCE_START_EVENT, YAML_STREAM_END_EVENT, YAML_UTF8_ENCODING, yaml_event_delete,
    yaml_event_t, yaml_event_type_t, yaml_parser_delete, yaml_parser_initialize, yaml_parser_parse,
    yaml_parser_set_encoding, yaml_parser_set_input_string, yaml_parser_t,
};

/// The first collection deeper than allowed, by 1-based line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TooDeep {
    pub line: usize,
}

/// Fails at the first sequence or mapping nested deeper than `max`. A
/// syntax error ends the check without a verdict: serde_yaml meets the same
/// error at the same place, and nothing before it nests deeper than `max`.
pub(crate) fn check_depth(text: &str, max: usize) -> Result<(), TooDeep> {
    let Some(mut parser) = Parser::new(text) else {
        return Ok(());
    };
    let mut depth = 0usize;
    while let Some((kind, line)) = parser.next() {
        match kind {
            YAML_SEQUENCE_START_EVENT | YAML_MAPPING_START_EVENT => {
                depth += 1;
                if depth > max {
                    return Err(TooDeep { line: line + 1 });
                }
            }
            YAML_SEQUENCE_END_EVENT | YAML_MAPPING_END_EVENT => {
                depth = depth.saturating_sub(1);
            }
            YAML_STREAM_END_EVENT => break,
            _ => {}
        }
    }
    Ok(())
}

/// A libyaml parser over borrowed text. Boxed because libyaml keeps a
/// pointer to the parser in the parser: it must not move once given input.
struct Parser<'a> {
    raw: Box<MaybeUninit<yaml_parser_t>>,
    /// libyaml reads `text` in place until the parser is deleted.
    _text: PhantomData<&'a str>,
}

impl<'a> Parser<'a> {
    /// `None` when libyaml cannot allocate its buffers.
    fn new(text: &'a str) -> Option<Parser<'a>> {
        let mut raw = Box::new(MaybeUninit::<yaml_parser_t>::uninit());
        let parser = raw.as_mut_ptr();
        // SAFETY: `yaml_parser_initialize` initializes the whole struct (and
        // frees what it allocated when it fails). The input is borrowed for
        // 'a, which outlives the parser, and the boxed parser never moves.
        unsafe {
            if yaml_parser_initialize(parser).fail {
                return None;
            }
            yaml_parser_set_encoding(parser, YAML_UTF8_ENCODING);
            yaml_parser_set_input_string(parser, text.as_ptr(), text.len() as u64);
        }
        Some(Parser {
            raw,
            _text: PhantomData,
        })
    }

    /// The next event's kind and 0-based line; `None` after a syntax error.
    fn next(&mut self) -> Option<(yaml_event_type_t, usize)> {
        let mut event = MaybeUninit::<yaml_event_t>::uninit();
        // SAFETY: the parser was initialized in `new`. `yaml_parser_parse`
        // fills the event when it succeeds, and only then is it read and
        // deleted (which frees the anchors, tags and scalars it holds).
        unsafe {
            if yaml_parser_parse(self.raw.as_mut_ptr(), event.as_mut_ptr()).fail {
                return None;
            }
            let event = event.as_mut_ptr();
            let next = ((*event).type_, (*event).start_mark.line as usize);
            yaml_event_delete(event);
            Some(next)
        }
    }
}

impl Drop for Parser<'_> {
    fn drop(&mut self) {
        // SAFETY: initialized in `new` (a `Parser` exists only then), and
        // deleted once, here.
        unsafe { yaml_parser_delete(self.raw.as_mut_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_block_and_flow_levels() {
        let text = "a:\n  b:\n    - [1, {c: d}]\n";
        // a map, a map, a sequence, a sequence, a map: 5 levels.
        assert_eq!(check_depth(text, 5), Ok(()));
        assert_eq!(check_depth(text, 4), Err(TooDeep { line: 3 }));
        assert_eq!(check_depth("", 0), Ok(()));
        assert_eq!(check_depth("plain", 0), Ok(()));
        assert_eq!(check_depth("[]\n", 0), Err(TooDeep { line: 1 }));
    }

    #[test]
    fn brackets_in_scalars_and_comments_are_not_levels() {
        let text = "a: '[[[['\nb: \"{{{{\"\nc: x[[[[ # [[[[\nd: |\n  [[[[\n";
        assert_eq!(check_depth(text, 1), Ok(()));
    }

    #[test]
    fn every_document_counts() {
        assert_eq!(
            check_depth("a: 1\n---\n[[[1]]]\n", 2),
            Err(TooDeep { line: 3 })
        );
    }

    #[test]
    fn a_syntax_error_is_left_to_serde_yaml() {
        // serde_yaml stops at the error on line 1 too, never reaching line 2.
        assert_eq!(check_depth("a: }\nb: [[[[[[1]]]]]]\n", 2), Ok(()));
        assert_eq!(check_depth("\t\u{0}", 8), Ok(()));
    }
}

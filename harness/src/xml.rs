//! The one escaping discipline for every XML document mkh hands to libvirt, and the small readers
//! for the XML libvirt hands back. Values are escaped here and nowhere else, so a name holding
//! `<`, `&` or `'` cannot change the structure of a document.

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

/// Escapes a value for use in text or in a single- or double-quoted attribute.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            // Attribute-value normalisation would turn raw whitespace into spaces: keep it exact.
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
    out
}

/// One element as read from a document: its path of local names, its namespace and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Local names from the root down to this element, e.g. `["network", "ip", "dhcp"]`.
    pub path: Vec<String>,
    pub namespace: Option<String>,
    pub attributes: Vec<(String, String)>,
    /// Text directly inside the element (concatenated), unescaped.
    pub text: String,
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_at(&self, path: &[&str]) -> bool {
        self.path.len() == path.len() && self.path.iter().zip(path).all(|(a, b)| a == b)
    }
}

/// Reads every element of `xml`, in document order, with namespaces resolved.
pub fn elements(xml: &str) -> Result<Vec<Element>, String> {
    let mut reader = NsReader::from_str(xml);
    let mut stack: Vec<usize> = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut out: Vec<Element> = Vec::new();
    loop {
        let position = reader.buffer_position();
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|e| format!("after byte {position}: {e}"))?;
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                let empty = matches!(event, Event::Empty(_));
                let element = read_start(start, ns, &path)?;
                path.push(element.path.last().cloned().unwrap_or_default());
                out.push(element);
                if empty {
                    path.pop();
                } else {
                    stack.push(out.len() - 1);
                }
            }
            Event::End(_) => {
                path.pop();
                stack.pop();
            }
            Event::Text(text) => {
                if let Some(&i) = stack.last() {
                    let text = text.decode().map_err(|e| e.to_string())?;
                    let text = quick_xml::escape::unescape(&text).map_err(|e| e.to_string())?;
                    out[i].text.push_str(&text);
                }
            }
            Event::GeneralRef(r) => {
                if let Some(&i) = stack.last() {
                    let name = r.decode().map_err(|e| e.to_string())?;
                    let entity = format!("&{name};");
                    let text = quick_xml::escape::unescape(&entity).map_err(|e| e.to_string())?;
                    out[i].text.push_str(&text);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

fn read_start(
    start: &BytesStart<'_>,
    ns: ResolveResult<'_>,
    parent: &[String],
) -> Result<Element, String> {
    let local = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
    let namespace = match ns {
        ResolveResult::Bound(ns) => Some(String::from_utf8_lossy(ns.as_ref()).into_owned()),
        _ => None,
    };
    let mut attributes = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| e.to_string())?;
        let key = String::from_utf8_lossy(attr.key.local_name().as_ref()).into_owned();
        let value = attr.unescape_value().map_err(|e| e.to_string())?;
        attributes.push((key, value.into_owned()));
    }
    let mut path = parent.to_vec();
    path.push(local);
    Ok(Element {
        path,
        namespace,
        attributes,
        text: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_values_read_back_unchanged() {
        let nasty = "a<b&c'd\"e>f\ng";
        let doc = format!(
            "<root x='{}'><child>{}</child></root>",
            escape(nasty),
            escape(nasty)
        );
        let els = elements(&doc).unwrap();
        assert_eq!(els[0].attr("x"), Some(nasty));
        assert_eq!(els[1].text, nasty);
        assert!(els[1].is_at(&["root", "child"]));
    }

    #[test]
    fn namespaces_are_resolved_whatever_the_prefix() {
        let doc = "<a xmlns:q='urn:x'><metadata><q:owner pid='7'/></metadata></a>";
        let els = elements(doc).unwrap();
        let owner = els
            .iter()
            .find(|e| e.path.last().unwrap() == "owner")
            .unwrap();
        assert_eq!(owner.namespace.as_deref(), Some("urn:x"));
        assert_eq!(owner.attr("pid"), Some("7"));
    }
}

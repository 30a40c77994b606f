//! SOAP 1.1 messages of PIDE's `IOTramite` contract, read and written.
//!
//! Reading: a request is text/XML in UTF-8 of a capped size; a DTD or an
//! entity declaration is refused before parsing (no entity is ever
//! expanded); the tree is parsed by `roxmltree` with a bound on its nodes.
//! The operation is the first element of the SOAP body, in the service's
//! namespace; its fields are unqualified children, as the contract's
//! document/literal wrapped style has them.
//!
//! Writing: elements are written by hand, every text escaped.

use base64::Engine;
use std::fmt::Write as _;

pub const SOAP_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// The hub's namespace (`IOTramiteService`): what the node serves.
pub const HUB_NS: &str = "http://ws.wsiopidetramite.segdi.gob.pe/";
/// An entity's namespace (`Tramite`): what the node calls on its SGD.
pub const ENTITY_NS: &str = "http://ws.wsiotramite.segdi.gob.pe/";

/// Nodes a request may hold: far above any real one (a few dozen fields
/// and annex names), far below what costs memory.
const MAX_NODES: u32 = 20_000;

/// A request the node cannot even read: answered with a SOAP Fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault(pub String);

/// A parsed SOAP request: the operation and its fields.
#[derive(Debug, Clone, Default)]
pub struct Call {
    pub operation: String,
    /// The `request` element's children, in order (name, text); or, for
    /// operations without a `request` wrapper, the operation's children.
    pub fields: Vec<(String, String)>,
    /// The texts of each `lstanexos/vnomdoc`, in order.
    pub annexes: Vec<String>,
}

impl Call {
    /// The text of field `name` (empty when absent).
    pub fn get(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|(n, _)| n == name)
    }
}

/// Reads a SOAP 1.1 request of namespace `ns`.
pub fn parse(body: &[u8], ns: &str) -> Result<Call, Fault> {
    let text =
        std::str::from_utf8(body).map_err(|_| Fault("the request is not UTF-8 text".into()))?;
    if text.contains("<!DOCTYPE") || text.contains("<!ENTITY") {
        return Err(Fault(
            "DTDs and entity declarations are not accepted".into(),
        ));
    }
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, options)
        .map_err(|e| Fault(format!("the request is not well-formed XML: {e}")))?;
    let envelope = doc.root_element();
    if !is(envelope, SOAP_ENV, "Envelope") {
        return Err(Fault("the request is not a SOAP 1.1 Envelope".into()));
    }
    let body = envelope
        .children()
        .find(|n| is(*n, SOAP_ENV, "Body"))
        .ok_or_else(|| Fault("the SOAP Envelope has no Body".into()))?;
    let operation = body
        .children()
        .find(|n| n.is_element())
        .ok_or_else(|| Fault("the SOAP Body names no operation".into()))?;
    if operation.tag_name().namespace() != Some(ns) {
        return Err(Fault(format!(
            "operation {} is not in namespace {ns}",
            operation.tag_name().name()
        )));
    }
    let wrapper = operation
        .children()
        .find(|n| n.is_element() && n.tag_name().name() == "request");
    let holder = wrapper.unwrap_or(operation);
    let mut call = Call {
        operation: operation.tag_name().name().to_owned(),
        ..Call::default()
    };
    for field in holder.children().filter(|n| n.is_element()) {
        let name = field.tag_name().name();
        if name == "lstanexos" {
            if let Some(doc) = field
                .children()
                .find(|n| n.is_element() && n.tag_name().name() == "vnomdoc")
            {
                call.annexes.push(text_of(doc));
            }
            continue;
        }
        call.fields.push((name.to_owned(), text_of(field)));
    }
    Ok(call)
}

fn is(node: roxmltree::Node<'_, '_>, ns: &str, name: &str) -> bool {
    node.is_element() && node.tag_name().namespace() == Some(ns) && node.tag_name().name() == name
}

/// An element's text (its text children joined; nested elements ignored).
fn text_of(node: roxmltree::Node<'_, '_>) -> String {
    node.children()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect()
}

/// Decodes `xs:base64Binary` (whitespace allowed between the characters).
pub fn base64(text: &str) -> Result<Vec<u8>, String> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| format!("is not valid base64: {e}"))
}

/// Escapes text for an element's content or an attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all are dropped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// Writes `<name>text</name>`, escaped; nothing for an empty optional field.
pub fn field(out: &mut String, name: &str, text: &str) {
    if !text.is_empty() {
        let _ = write!(out, "<{name}>{}</{name}>", escape(text));
    }
}

/// Writes `<name>text</name>` even when the text is empty.
pub fn required(out: &mut String, name: &str, text: &str) {
    let _ = write!(out, "<{name}>{}</{name}>", escape(text));
}

/// The start of a SOAP message whose body holds element `element` of `ns`
/// (`prefix:element`, `prefix` bound to `ns`), up to its content.
pub fn open(ns: &str, element: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <S:Envelope xmlns:S=\"{SOAP_ENV}\"><S:Body><ns2:{element} xmlns:ns2=\"{ns}\">"
    )
}

/// The end of what [`open`] started.
pub fn close(element: &str) -> String {
    format!("</ns2:{element}></S:Body></S:Envelope>")
}

/// A whole SOAP message: `element` of `ns` holding `content`.
pub fn message(ns: &str, element: &str, content: &str) -> String {
    format!("{}{content}{}", open(ns, element), close(element))
}

/// A SOAP 1.1 Fault: `Client` when the request is at fault, `Server` when
/// the node is.
pub fn fault(client: bool, reason: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <S:Envelope xmlns:S=\"{SOAP_ENV}\"><S:Body><S:Fault>\
         <faultcode>S:{}</faultcode><faultstring>{}</faultstring>\
         </S:Fault></S:Body></S:Envelope>",
        if client { "Client" } else { "Server" },
        escape(reason)
    )
}

/// The `return` of an answer read back (what an SGD answered the node):
/// `vcodres` and `vdesres`.
pub fn result_code(body: &[u8]) -> Result<(String, String), String> {
    let text = std::str::from_utf8(body).map_err(|_| "the answer is not UTF-8".to_owned())?;
    if text.contains("<!DOCTYPE") || text.contains("<!ENTITY") {
        return Err("the answer carries a DTD".into());
    }
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, options)
        .map_err(|e| format!("the answer is not well-formed XML: {e}"))?;
    let find = |name: &str| {
        doc.descendants()
            .find(|n| n.is_element() && n.tag_name().name() == name)
            .map(text_of)
    };
    if let Some(reason) = find("faultstring") {
        return Err(format!("the SGD answered a SOAP Fault: {reason}"));
    }
    let code = find("vcodres").ok_or("the answer has no vcodres")?;
    Ok((code.trim().to_owned(), find("vdesres").unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(inner: &str) -> String {
        format!(
            "<soapenv:Envelope xmlns:soapenv=\"{SOAP_ENV}\" xmlns:ws=\"{HUB_NS}\">\
             <soapenv:Body><ws:consultarTramiteResponse><request>{inner}</request>\
             </ws:consultarTramiteResponse></soapenv:Body></soapenv:Envelope>"
        )
    }

    #[test]
    fn fields_are_read_from_the_request_wrapper() {
        let call = parse(
            request("<vrucentrem>20521286769</vrucentrem><vcuo>1000000001</vcuo>").as_bytes(),
            HUB_NS,
        )
        .unwrap();
        assert_eq!(call.operation, "consultarTramiteResponse");
        assert_eq!(call.get("vcuo"), "1000000001");
        assert_eq!(call.get("vrucentrec"), "");
    }

    #[test]
    fn dtds_entities_and_broken_xml_are_faults() {
        let bomb = format!(
            "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"aaaa\">]>{}",
            request("<vcuo>&a;</vcuo>")
        );
        assert!(
            parse(bomb.as_bytes(), HUB_NS)
                .unwrap_err()
                .0
                .contains("DTD")
        );
        assert!(
            parse(b"<a><b></a>", HUB_NS)
                .unwrap_err()
                .0
                .contains("well-formed")
        );
        assert!(parse(b"<a/>", HUB_NS).unwrap_err().0.contains("Envelope"));
        // Right envelope, another service's namespace.
        let other = request("").replace(HUB_NS, ENTITY_NS);
        assert!(
            parse(other.as_bytes(), HUB_NS)
                .unwrap_err()
                .0
                .contains("namespace")
        );
    }

    #[test]
    fn written_text_is_escaped() {
        let mut out = String::new();
        field(&mut out, "vasu", "a < b & \"c\"\u{1}");
        assert_eq!(out, "<vasu>a &lt; b &amp; &quot;c&quot;</vasu>");
        field(&mut out, "vobs", "");
        assert_eq!(out, "<vasu>a &lt; b &amp; &quot;c&quot;</vasu>");
    }

    #[test]
    fn an_answer_gives_its_code() {
        let answer = message(
            ENTITY_NS,
            "recepcionarTramiteResponseResponse",
            "<return><vcodres>0000</vcodres><vdesres>OK</vdesres></return>",
        );
        assert_eq!(
            result_code(answer.as_bytes()).unwrap(),
            ("0000".into(), "OK".into())
        );
        assert!(
            result_code(fault(false, "down").as_bytes())
                .unwrap_err()
                .contains("down")
        );
    }
}

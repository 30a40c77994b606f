//! The cargo a citizen prints, as a PDF: the codes, the documents with their
//! SHA-256, the receipts, and a QR code of the link that verifies it.
//! Written with `pdf-writer` (the PDF objects) and `qrcodegen` (the QR
//! matrix), in the standard Helvetica and Courier fonts every reader has,
//! so nothing is embedded and the file stays small.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str};
use qrcodegen::{QrCode, QrCodeEcc};

/// What a cargo says.
#[derive(Debug, Clone, Default)]
pub struct Cargo {
    pub title: String,
    /// Under the title: who issues it.
    pub issuer: String,
    pub fields: Vec<(String, String)>,
    pub sections: Vec<Section>,
    /// The link the QR code carries, printed under it too.
    pub link: String,
    pub link_caption: String,
}

/// A part of the cargo: a heading, its fields and its documents.
#[derive(Debug, Clone, Default)]
pub struct Section {
    pub heading: String,
    pub fields: Vec<(String, String)>,
    /// (name, size in bytes, SHA-256 in hex).
    pub documents: Vec<(String, u64, String)>,
    pub documents_heading: String,
}

const WIDTH: f32 = 595.0; // A4, in points
const HEIGHT: f32 = 842.0;
const MARGIN: f32 = 50.0;
const QR_SIZE: f32 = 110.0;

#[derive(Clone, Copy)]
enum Font {
    Regular,
    Bold,
    Mono,
}

impl Font {
    fn name(self) -> Name<'static> {
        match self {
            Font::Regular => Name(b"F1"),
            Font::Bold => Name(b"F2"),
            Font::Mono => Name(b"F3"),
        }
    }
}

/// One line of text to set, and the space it takes.
struct Line {
    font: Font,
    size: f32,
    indent: f32,
    text: String,
    space_before: f32,
}

/// Renders the cargo as a PDF file, on as many A4 pages as it needs.
pub fn render(cargo: &Cargo) -> Vec<u8> {
    let lines = layout(cargo);
    let mut pages: Vec<Content> = vec![Content::new()];
    // The first lines are short enough to leave the QR code its place at
    // the first page's top right (see `layout`).
    let mut y = HEIGHT - MARGIN;
    for line in &lines {
        let height = line.size * 1.35 + line.space_before;
        if y - height < MARGIN {
            pages.push(Content::new());
            y = HEIGHT - MARGIN;
        }
        y -= height;
        let content = pages.last_mut().expect("one page at least");
        content.begin_text();
        content.set_font(line.font.name(), line.size);
        content.next_line(MARGIN + line.indent, y);
        content.show(Str(&win_ansi(&line.text)));
        content.end_text();
    }
    draw_qr(&mut pages[0], &cargo.link);

    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let fonts = [Ref::new(3), Ref::new(4), Ref::new(5)];
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    let page_ids: Vec<Ref> = (0..pages.len())
        .map(|i| Ref::new(6 + 2 * i as i32))
        .collect();
    pdf.pages(tree)
        .kids(page_ids.iter().copied())
        .count(pages.len() as i32);
    for (i, content) in pages.into_iter().enumerate() {
        let id = page_ids[i];
        let content_id = Ref::new(id.get() + 1);
        let mut page = pdf.page(id);
        page.media_box(Rect::new(0.0, 0.0, WIDTH, HEIGHT));
        page.parent(tree);
        page.contents(content_id);
        let mut resources = page.resources();
        resources
            .fonts()
            .pair(Font::Regular.name(), fonts[0])
            .pair(Font::Bold.name(), fonts[1])
            .pair(Font::Mono.name(), fonts[2]);
        resources.finish();
        page.finish();
        pdf.stream(content_id, &content.finish());
    }
    for (id, base) in fonts
        .iter()
        .zip([&b"Helvetica"[..], &b"Helvetica-Bold"[..], &b"Courier"[..]])
    {
        pdf.type1_font(*id)
            .base_font(Name(base))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    pdf.finish()
}

fn layout(cargo: &Cargo) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut push = |font, size, indent, text: &str, space_before, width: usize| {
        for (i, piece) in wrap(text, width).into_iter().enumerate() {
            lines.push(Line {
                font,
                size,
                indent,
                text: piece,
                space_before: if i == 0 { space_before } else { 0.0 },
            });
        }
    };
    // Beside the QR code: narrower lines.
    push(Font::Bold, 18.0, 0.0, &cargo.title, 0.0, 38);
    push(Font::Regular, 11.0, 0.0, &cargo.issuer, 2.0, 60);
    for (label, value) in &cargo.fields {
        push(Font::Bold, 9.0, 0.0, label, 8.0, 60);
        push(Font::Mono, 11.0, 0.0, value, 0.0, 50);
    }
    push(Font::Regular, 8.0, 0.0, &cargo.link_caption, 10.0, 90);
    push(Font::Mono, 7.0, 0.0, &cargo.link, 0.0, 70);
    for section in &cargo.sections {
        push(Font::Bold, 12.0, 0.0, &section.heading, 16.0, 80);
        for (label, value) in &section.fields {
            push(
                Font::Regular,
                10.0,
                0.0,
                &format!("{label}: {value}"),
                2.0,
                90,
            );
        }
        if !section.documents.is_empty() {
            push(Font::Bold, 10.0, 0.0, &section.documents_heading, 6.0, 90);
        }
        for (name, size, sha) in &section.documents {
            push(
                Font::Regular,
                10.0,
                10.0,
                &format!("{name} ({size} bytes)"),
                3.0,
                88,
            );
            push(Font::Mono, 8.0, 10.0, &format!("SHA-256 {sha}"), 0.0, 100);
        }
    }
    lines
}

/// Splits text into lines of at most `width` characters, at spaces where it
/// can.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word = word.to_owned();
        while word.chars().count() > width {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            let head: String = word.chars().take(width).collect();
            word = word.chars().skip(width).collect();
            lines.push(head);
        }
        let needed = line.chars().count() + usize::from(!line.is_empty()) + word.chars().count();
        if needed > width && !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Text in the standard fonts' WinAnsi encoding: Latin-1 letters (á, ñ, ü,
/// ¿, ¡) as they are, a few punctuation marks mapped, anything else as `?`.
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c as u32 {
            0x20..=0x7e | 0xa0..=0xff => c as u32 as u8,
            _ => match c {
                '€' => 0x80,
                '‘' => 0x91,
                '’' => 0x92,
                '“' => 0x93,
                '”' => 0x94,
                '•' => 0x95,
                '–' => 0x96,
                '—' => 0x97,
                _ => b'?',
            },
        })
        .collect()
}

/// The QR code of `link`, at the first page's top right, with its quiet zone.
fn draw_qr(content: &mut Content, link: &str) {
    if link.is_empty() {
        return;
    }
    let Ok(qr) = QrCode::encode_text(link, QrCodeEcc::Medium) else {
        return;
    };
    let modules = qr.size();
    let quiet = 4;
    let cell = QR_SIZE / (modules + 2 * quiet) as f32;
    let left = WIDTH - MARGIN - QR_SIZE;
    let top = HEIGHT - MARGIN;
    content.set_fill_rgb(0.0, 0.0, 0.0);
    for y in 0..modules {
        for x in 0..modules {
            if qr.get_module(x, y) {
                content.rect(
                    left + (x + quiet) as f32 * cell,
                    top - (y + quiet + 1) as f32 * cell,
                    cell,
                    cell,
                );
            }
        }
    }
    content.fill_nonzero();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_words_and_lines_wrap_within_the_width() {
        assert_eq!(wrap("uno dos tres", 7), vec!["uno dos", "tres"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 4), vec![""]);
        assert_eq!(win_ansi("Año ¿sí? ✓"), b"A\xf1o \xbfs\xed? ?".to_vec());
    }

    #[test]
    fn a_cargo_is_a_pdf_with_its_text_and_a_page_per_screenful() {
        let cargo = Cargo {
            title: "Cargo de recepción".into(),
            issuer: "OEFA".into(),
            fields: vec![("Código".into(), "OEFA-2026-000001".into())],
            sections: (0..40)
                .map(|i| Section {
                    heading: format!("Constancia {i}"),
                    documents: vec![("a.pdf".into(), 3, "ab".repeat(32))],
                    documents_heading: "Documentos".into(),
                    ..Default::default()
                })
                .collect(),
            link: "https://portal.example/seguimiento?codigo=OEFA-2026-000001".into(),
            link_caption: "Verifique en".into(),
        };
        let pdf = render(&cargo);
        assert!(pdf.starts_with(b"%PDF-"));
        let text = String::from_utf8_lossy(&pdf);
        assert!(text.contains("(OEFA-2026-000001)"));
        let pages = text.matches("/Type /Page").count() - text.matches("/Type /Pages").count();
        assert!(pages >= 2, "{pages} page(s)");
    }
}

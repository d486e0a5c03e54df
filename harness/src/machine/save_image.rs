//! A libvirt QEMU save image with another domain's XML in its header, so that one saved guest can
//! be restored as many machines at once.
//!
//! libvirt refuses to restore a save image under another name or UUID than the saved domain's,
//! and a save image's XML can only be replaced by one of the same name and UUID
//! (`virDomainSaveImageDefineXML`). The header is libvirt's documented on-disk format
//! (`src/qemu/qemu_saveimage.h`, version 2): the magic `LibvirtQemudSave`, then little-endian
//! u32s `version`, `data_len`, `was_running`, `compressed`, `cookieOffset` and 14 unused ones;
//! then `data_len` bytes holding the NUL-terminated domain XML, at `cookieOffset` the
//! NUL-terminated migration cookie, and zero padding; then QEMU's migration stream. The XML is
//! replaced in the copy the same way libvirt's own `save-image-define` does: within `data_len`,
//! the cookie moved behind it.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{Error, Result};

const MAGIC: &[u8; 16] = b"LibvirtQemudSave";
const VERSION: u32 = 2;
/// Magic, five fields and 14 unused u32s.
const HEADER_LEN: usize = 16 + 19 * 4;

/// Copies the save image `from` to `to` with `xml` as the domain to restore.
pub(crate) fn copy_with_xml(from: &Path, to: &Path, xml: &str) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |e| Error::io(&path, e)
    };
    let mut head = vec![0; HEADER_LEN];
    let mut src = std::fs::File::open(from).map_err(io(from))?;
    src.read_exact(&mut head).map_err(io(from))?;
    let data_len = parse_header(&head).map_err(|problem| bad(from, problem))?;
    let mut data = vec![0; data_len];
    src.read_exact(&mut data).map_err(io(from))?;
    let new = replace_xml(&head, &data, xml).map_err(|problem| bad(from, problem))?;
    // From the file whose header was read (a save renamed over it meanwhile is not mixed
    // in); the kernel copies the stream (copy_file_range). No fsync: the copy is restored at
    // once and is of no use after a crash.
    src.seek(SeekFrom::Start(0)).map_err(io(from))?;
    let mut dst = std::fs::File::create(to).map_err(io(to))?;
    std::io::copy(&mut src, &mut dst).map_err(io(to))?;
    dst.seek(SeekFrom::Start(0)).map_err(io(to))?;
    dst.write_all(&new).map_err(io(to))
}

fn bad(path: &Path, problem: String) -> Error {
    Error::BadFile {
        path: path.to_owned(),
        what: "a saved guest (libvirt save image)".into(),
        problem,
    }
}

fn field(head: &[u8], index: usize) -> u32 {
    let at = 16 + index * 4;
    u32::from_le_bytes(head[at..at + 4].try_into().expect("4 bytes"))
}

/// Checks the header; returns `data_len`.
fn parse_header(head: &[u8]) -> std::result::Result<usize, String> {
    if head.len() < HEADER_LEN || &head[..16] != MAGIC {
        return Err("it does not start with libvirt's save image magic".into());
    }
    if field(head, 0) != VERSION {
        return Err(format!(
            "its format version is {}, mkh reads version {VERSION}",
            field(head, 0)
        ));
    }
    if field(head, 3) != 0 {
        return Err("it is compressed; mkh saves guests uncompressed".into());
    }
    Ok(field(head, 1) as usize)
}

/// The new header and data section: `xml`, the old cookie behind it, zeros up to `data_len`.
fn replace_xml(head: &[u8], data: &[u8], xml: &str) -> std::result::Result<Vec<u8>, String> {
    let cookie_at = field(head, 4) as usize;
    let cookie = match cookie_at {
        0 => &[][..],
        at if at <= data.len() => {
            let rest = &data[at..];
            &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
        }
        _ => return Err("its cookie lies outside its data section".into()),
    };
    if xml.as_bytes().contains(&0) {
        return Err("the new domain XML holds a NUL byte".into());
    }
    let mut section = Vec::with_capacity(data.len());
    section.extend_from_slice(xml.as_bytes());
    section.push(0);
    let new_cookie_at = section.len();
    if !cookie.is_empty() {
        section.extend_from_slice(cookie);
        section.push(0);
    }
    if section.len() > data.len() {
        return Err(format!(
            "the new domain XML ({} bytes) does not fit its {}-byte data section",
            xml.len(),
            data.len()
        ));
    }
    section.resize(data.len(), 0);
    let mut out = head[..HEADER_LEN].to_vec();
    let cookie_field = if cookie.is_empty() { 0 } else { new_cookie_at };
    out[32..36].copy_from_slice(&(cookie_field as u32).to_le_bytes());
    out.extend_from_slice(&section);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(xml: &str, cookie: &str, data_len: usize, stream: &[u8]) -> Vec<u8> {
        let mut data = format!("{xml}\0").into_bytes();
        let cookie_at = data.len();
        data.extend_from_slice(format!("{cookie}\0").as_bytes());
        data.resize(data_len, 0);
        let mut out = MAGIC.to_vec();
        for v in [VERSION, data_len as u32, 1, 0, cookie_at as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.resize(HEADER_LEN, 0);
        out.extend_from_slice(&data);
        out.extend_from_slice(stream);
        out
    }

    fn xml_and_cookie(file: &[u8]) -> (String, String) {
        let data_len = parse_header(file).unwrap();
        let data = &file[HEADER_LEN..HEADER_LEN + data_len];
        let text = |b: &[u8]| String::from_utf8(b.split(|&c| c == 0).next().unwrap().to_vec());
        let cookie_at = field(file, 4) as usize;
        (text(data).unwrap(), text(&data[cookie_at..]).unwrap())
    }

    #[test]
    fn the_copy_restores_the_new_domain_with_the_old_cookie_and_stream() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("a.save"), dir.path().join("b.save"));
        let stream = b"\x00\x00\x00\x03QEVM stream bytes";
        std::fs::write(
            &from,
            image("<domain>a</domain>", "<cookie/>", 4096, stream),
        )
        .unwrap();
        let longer = "<domain><name>a much longer name</name></domain>";
        copy_with_xml(&from, &to, longer).unwrap();
        let copy = std::fs::read(&to).unwrap();
        assert_eq!(copy.len(), std::fs::read(&from).unwrap().len());
        assert_eq!(
            xml_and_cookie(&copy),
            (longer.to_owned(), "<cookie/>".to_owned())
        );
        assert!(copy.ends_with(stream));
        assert_eq!(parse_header(&copy).unwrap(), 4096);
    }

    #[test]
    fn what_mkh_cannot_rewrite_is_refused_by_name() {
        let ok = image("<domain/>", "<cookie/>", 64, b"");
        let head = &ok[..HEADER_LEN];
        let data = &ok[HEADER_LEN..];
        let err = replace_xml(head, data, &"x".repeat(100)).unwrap_err();
        assert!(err.contains("does not fit"), "{err}");
        assert!(replace_xml(head, data, "a\0b").is_err());

        let mut wrong_magic = ok.clone();
        wrong_magic[0] = b'X';
        assert!(parse_header(&wrong_magic).unwrap_err().contains("magic"));
        let mut compressed = ok.clone();
        compressed[28..32].copy_from_slice(&1u32.to_le_bytes());
        assert!(parse_header(&compressed)
            .unwrap_err()
            .contains("compressed"));
        let mut v3 = ok.clone();
        v3[16..20].copy_from_slice(&3u32.to_le_bytes());
        assert!(parse_header(&v3).unwrap_err().contains("version is 3"));
        assert!(parse_header(&ok[..20]).is_err());

        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.save");
        std::fs::write(&junk, b"not a save image at all, just some bytes..........................................................").unwrap();
        let err = copy_with_xml(&junk, &dir.path().join("out"), "<domain/>").unwrap_err();
        assert!(err.to_string().contains("junk.save"), "{err}");
        assert!(!dir.path().join("out").exists());
    }
}

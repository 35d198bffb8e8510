//! The archive format (decision 0021): JSON Lines, UTF-8. Line 1 is the [`Manifest`]; then
//! every archived table's rows, table by table in the manifest's order, one per line:
//! `{"table":"users","row":{...}}`, the row as PostgreSQL's `to_jsonb` renders it. Every line
//! ends with `\n`. The manifest holds, per table, the row count and the SHA-256 of its lines
//! (each line's bytes and its `\n`), and the length and SHA-256 of all data lines, so that a
//! changed, missing or added byte anywhere after the manifest is found.
//!
//! A signed archive (version 2, decision 0022) has the manifest's signature as line 2, between
//! the manifest and the data lines ([`super::signature`]).
//!
//! [`Verifier`] reads an archive in pieces of any size, in memory bounded by the longest
//! line, and hands back its lines; it refuses (INVALID_ARGUMENT `ARCHIVE_INVALID`, with a
//! field violation naming the manifest, a table or a line) anything that does not match, and
//! (`ARCHIVE_SIGNATURE_INVALID`) a signature that is missing, unknown or wrong under this
//! server's keys. It hands back the manifest only once its signature is verified, so nothing
//! that follows the manifest is used or stored before.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::signature;
pub use super::signature::{VERSION_SIGNED, VERSION_UNSIGNED};
use crate::config::ArchiveSigningKeys;
use crate::domain::tenants::ChannelBinding;
use crate::error::{Error, Reason, Result};

/// The format's name, the manifest's `format`.
pub const FORMAT: &str = "tenantd-archive";
/// The longest line read (a document's content is at most a few MiB; hex doubles it).
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// The first line of an archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION_UNSIGNED`], or [`VERSION_SIGNED`] when line 2 is the signature ([`header`]
    /// sets it).
    pub version: u32,
    /// The tenantd that wrote it.
    pub tenantd_version: String,
    /// When the snapshot was taken (about).
    pub export_time: DateTime<Utc>,
    /// The exported tenant.
    pub tenant_id: Uuid,
    /// Its registry row as PostgreSQL renders it (slug, display name, state, labels, plan,
    /// overrides, tier, times).
    pub tenant: serde_json::Value,
    /// Its domains, sorted.
    pub domains: Vec<String>,
    /// Its channel bindings, sorted.
    pub channel_bindings: Vec<ChannelBinding>,
    /// The archived tables, in the order of their lines.
    pub tables: Vec<TableManifest>,
    /// The length of all data lines.
    pub data_bytes: u64,
    /// The SHA-256 (hex) of all data lines.
    pub data_sha256: String,
}

/// What the manifest says about one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableManifest {
    /// The table.
    pub name: String,
    /// Its columns, in order.
    pub columns: Vec<ColumnManifest>,
    /// How many lines it has.
    pub rows: u64,
    /// The SHA-256 (hex) of its lines.
    pub sha256: String,
}

/// A column of an archived table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnManifest {
    /// Its name.
    pub name: String,
    /// Its PostgreSQL type, as `format_type` spells it.
    #[serde(rename = "type")]
    pub sql_type: String,
}

/// The first lines of an archive: the manifest, with the version `keys` call for, and its
/// signature line when they sign.
pub fn header(mut manifest: Manifest, keys: &ArchiveSigningKeys) -> Result<Vec<u8>> {
    manifest.version = signature::version(keys);
    let mut bytes = serde_json::to_vec(&manifest).map_err(|error| Error::internal(error.into()))?;
    bytes.push(b'\n');
    if let Some(signature) = signature::sign(keys, &bytes)? {
        bytes.extend_from_slice(&signature);
    }
    Ok(bytes)
}

/// A data line: `{"table":"<table>","row":<row>}` and `\n`.
pub fn row_line(table: &str, row: &str) -> String {
    format!("{{\"table\":\"{table}\",\"row\":{row}}}\n")
}

/// The table and row of a data line (without its `\n`), if it has that exact shape.
fn parse_row_line(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix("{\"table\":\"")?;
    let (table, rest) = rest.split_once("\",\"row\":")?;
    if table.is_empty() || !table.bytes().all(|byte| byte.is_ascii_lowercase() || byte == b'_') {
        return None;
    }
    let row = rest.strip_suffix('}')?;
    row.starts_with('{').then_some((table, row))
}

/// A running SHA-256 and length.
#[derive(Debug, Clone, Default)]
pub struct Digester {
    hasher: Sha256,
    bytes: u64,
    /// Lines seen.
    pub lines: u64,
}

impl Digester {
    /// Adds a line (with its `\n`).
    pub fn line(&mut self, line: &[u8]) {
        self.hasher.update(line);
        self.bytes += line.len() as u64;
        self.lines += 1;
    }

    /// The length so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The hex SHA-256 of everything added.
    pub fn finish(self) -> String {
        hex(&self.hasher.finalize())
    }
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A line of an archive, as [`Verifier::push`] hands it back.
#[derive(Debug, Clone, PartialEq)]
pub enum ArchiveLine {
    /// The first line.
    Manifest(Box<Manifest>),
    /// A row of the manifest's table at `table`.
    Row {
        /// The table's index in the manifest.
        table: usize,
        /// The row's JSON text.
        row: String,
    },
}

fn invalid(field: impl Into<String>, description: impl Into<String>) -> Error {
    Error::invalid(Reason::ArchiveInvalid, field, description)
}

/// Reads and checks an archive piece by piece.
#[derive(Debug, Default)]
pub struct Verifier {
    partial: Vec<u8>,
    manifest: Option<Manifest>,
    /// A signed archive's manifest and its line's bytes, until its signature (line 2) is read.
    unverified: Option<(Manifest, Vec<u8>)>,
    keys: ArchiveSigningKeys,
    line_number: u64,
    table: usize,
    current: Digester,
    data: Digester,
    known_tables: Vec<&'static str>,
}

impl Verifier {
    /// A verifier that accepts only tables of `known_tables`, and signatures as `keys` rule
    /// ([`signature::required`]).
    pub fn new(known_tables: &[&'static str], keys: &ArchiveSigningKeys) -> Self {
        Self { known_tables: known_tables.to_vec(), keys: keys.clone(), ..Self::default() }
    }

    /// The manifest, once its line (and signature) was read.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// Reads the next bytes; returns the lines they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<ArchiveLine>> {
        let mut lines = Vec::new();
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|byte| *byte == b'\n') {
            let (head, tail) = rest.split_at(end + 1);
            rest = tail;
            let read = if self.partial.is_empty() {
                self.line(head)?
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(head);
                self.line(&line)?
            };
            lines.extend(read);
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > MAX_LINE_BYTES {
            return Err(invalid(
                format!("archive.line[{}]", self.line_number + 1),
                format!("is longer than {MAX_LINE_BYTES} bytes"),
            ));
        }
        Ok(lines)
    }

    /// Checks the end of the archive: every table complete, nothing after the last line.
    pub fn finish(mut self) -> Result<Manifest> {
        if !self.partial.is_empty() {
            return Err(invalid(
                format!("archive.line[{}]", self.line_number + 1),
                "does not end with a newline: the archive is truncated",
            ));
        }
        if self.unverified.is_some() {
            return Err(Error::invalid(
                Reason::ArchiveSignatureInvalid,
                "archive.signature",
                "is missing: the archive ends after its manifest",
            ));
        }
        let Some(manifest) = self.manifest.take() else {
            return Err(invalid("archive.manifest", "is missing: the archive is empty"));
        };
        while self.table < manifest.tables.len() {
            self.close_table(&manifest)?;
        }
        let (bytes, sha256) = (self.data.bytes(), std::mem::take(&mut self.data).finish());
        if bytes != manifest.data_bytes || sha256 != manifest.data_sha256 {
            return Err(invalid(
                "archive.manifest.data_sha256",
                format!("the data lines have {bytes} bytes and SHA-256 {sha256}; the manifest says otherwise"),
            ));
        }
        Ok(manifest)
    }

    /// Reads one line; the manifest of a signed archive is handed back with its signature line.
    fn line(&mut self, line: &[u8]) -> Result<Option<ArchiveLine>> {
        self.line_number += 1;
        let field = || format!("archive.line[{}]", self.line_number);
        if let Some((manifest, manifest_line)) = self.unverified.take() {
            signature::verify(&self.keys, &manifest_line, line)?;
            self.manifest = Some(manifest.clone());
            return Ok(Some(ArchiveLine::Manifest(Box::new(manifest))));
        }
        let Some(manifest) = self.manifest.take() else {
            let manifest = self.read_manifest(line)?;
            if signature::required(&self.keys, manifest.version)? {
                self.unverified = Some((manifest, line.to_vec()));
                return Ok(None);
            }
            self.manifest = Some(manifest.clone());
            return Ok(Some(ArchiveLine::Manifest(Box::new(manifest))));
        };
        let outcome = self.row(&manifest, line, field());
        self.manifest = Some(manifest);
        outcome.map(Some)
    }

    fn read_manifest(&self, line: &[u8]) -> Result<Manifest> {
        let manifest: Manifest = serde_json::from_slice(line)
            .map_err(|_| invalid("archive.manifest", "line 1 is not a tenantd archive manifest"))?;
        if manifest.format != FORMAT {
            return Err(invalid("archive.manifest.format", format!("must be {FORMAT:?}")));
        }
        if ![VERSION_UNSIGNED, VERSION_SIGNED].contains(&manifest.version) {
            return Err(invalid(
                "archive.manifest.version",
                format!("must be {VERSION_UNSIGNED} or {VERSION_SIGNED}: this tenantd reads no other"),
            ));
        }
        for (index, table) in manifest.tables.iter().enumerate() {
            if !self.known_tables.contains(&table.name.as_str()) {
                return Err(invalid(
                    format!("archive.manifest.tables[{index}]"),
                    format!("names {:?}, which is not an archived table", table.name),
                ));
            }
            if manifest.tables[..index].iter().any(|earlier| earlier.name == table.name) {
                return Err(invalid(format!("archive.manifest.tables[{index}]"), "names a table twice"));
            }
        }
        Ok(manifest)
    }

    fn row(&mut self, manifest: &Manifest, line: &[u8], field: String) -> Result<ArchiveLine> {
        let text = std::str::from_utf8(line).map_err(|_| invalid(field.clone(), "is not UTF-8"))?;
        let (table, row) = text
            .strip_suffix('\n')
            .and_then(parse_row_line)
            .ok_or_else(|| invalid(field.clone(), "is not a row line {\"table\":...,\"row\":{...}}"))?;
        while manifest.tables.get(self.table).is_some_and(|current| current.name != table) {
            self.close_table(manifest)?;
        }
        if self.table >= manifest.tables.len() {
            return Err(invalid(field, format!("names table {table:?} out of the manifest's order")));
        }
        self.current.line(line);
        self.data.line(line);
        Ok(ArchiveLine::Row { table: self.table, row: row.to_owned() })
    }

    /// Checks the current table's count and hash against the manifest; moves to the next.
    fn close_table(&mut self, manifest: &Manifest) -> Result<()> {
        let expected = &manifest.tables[self.table];
        let digest = std::mem::take(&mut self.current);
        let field = format!("archive.tables[{}]", expected.name);
        if digest.lines != expected.rows {
            return Err(invalid(field, format!("has {} rows; the manifest says {}", digest.lines, expected.rows)));
        }
        if digest.finish() != expected.sha256 {
            return Err(invalid(
                field,
                "the SHA-256 of its lines does not match the manifest: the archive was changed",
            ));
        }
        self.table += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(rows: &[(&str, &str)]) -> Vec<u8> {
        archive_under(rows, &ArchiveSigningKeys::default())
    }

    /// An archive of `rows`, signed by `keys`' first key if any.
    fn archive_under(rows: &[(&str, &str)], keys: &ArchiveSigningKeys) -> Vec<u8> {
        let tables = ["users", "documents"];
        let mut data = Vec::new();
        let mut all = Digester::default();
        let mut manifests = Vec::new();
        for table in tables {
            let mut digest = Digester::default();
            for (name, row) in rows.iter().filter(|(name, _)| *name == table) {
                let line = row_line(name, row);
                digest.line(line.as_bytes());
                all.line(line.as_bytes());
                data.extend_from_slice(line.as_bytes());
            }
            manifests.push(TableManifest {
                name: table.to_owned(),
                columns: vec![],
                rows: digest.lines,
                sha256: digest.finish(),
            });
        }
        let manifest = Manifest {
            format: FORMAT.to_owned(),
            version: 0,
            tenantd_version: "test".to_owned(),
            export_time: Utc::now(),
            tenant_id: Uuid::nil(),
            tenant: serde_json::json!({}),
            domains: vec![],
            channel_bindings: vec![],
            tables: manifests,
            data_bytes: all.bytes(),
            data_sha256: all.finish(),
        };
        let mut bytes = header(manifest, keys).expect("header");
        bytes.extend_from_slice(&data);
        bytes
    }

    fn verify(bytes: &[u8], piece: usize) -> Result<Vec<ArchiveLine>> {
        verify_under(bytes, piece, &ArchiveSigningKeys::default())
    }

    fn verify_under(bytes: &[u8], piece: usize, keys: &ArchiveSigningKeys) -> Result<Vec<ArchiveLine>> {
        let mut verifier = Verifier::new(&["users", "documents"], keys);
        let mut lines = Vec::new();
        for chunk in bytes.chunks(piece) {
            lines.extend(verifier.push(chunk)?);
        }
        verifier.finish()?;
        Ok(lines)
    }

    fn field_of(error: Error) -> String {
        assert_eq!(error.reason(), Reason::ArchiveInvalid);
        error.violations().first().map(|violation| violation.field.clone()).unwrap_or_default()
    }

    const ROWS: &[(&str, &str)] =
        &[("users", r#"{"id": 1}"#), ("users", r#"{"id": 2}"#), ("documents", r#"{"id": 3}"#)];

    #[test]
    fn an_archive_read_in_pieces_of_any_size_gives_back_its_manifest_and_rows() {
        let bytes = archive(ROWS);
        for piece in [1, 7, 64, bytes.len()] {
            let lines = verify(&bytes, piece).expect("valid");
            assert_eq!(lines.len(), 4, "piece {piece}");
            assert_eq!(lines[3], ArchiveLine::Row { table: 1, row: r#"{"id": 3}"#.to_owned() });
        }
    }

    #[test]
    fn a_changed_byte_in_a_row_names_its_table() {
        let mut bytes = archive(ROWS);
        let at = bytes.len() - 3;
        bytes[at] = b'4';
        assert_eq!(field_of(verify(&bytes, 5).expect_err("tampered")), "archive.tables[documents]");
        assert!(verify(&archive(ROWS), 5).is_ok(), "the untampered archive is valid");
    }

    #[test]
    fn a_truncated_archive_is_refused_wherever_it_is_cut() {
        let bytes = archive(ROWS);
        for cut in 0..bytes.len() {
            assert!(verify(&bytes[..cut], 3).is_err(), "cut at {cut}");
        }
        assert!(verify(&bytes, 3).is_ok());
    }

    #[test]
    fn a_dropped_line_is_found_by_the_tables_count() {
        let bytes = archive(ROWS);
        let text = String::from_utf8(bytes).expect("utf-8");
        let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
        lines.remove(1);
        let field = field_of(verify(lines.concat().as_bytes(), 9).expect_err("a row is missing"));
        assert_eq!(field, "archive.tables[users]");
    }

    #[test]
    fn a_manifest_naming_an_unknown_table_is_refused() {
        let mut verifier = Verifier::new(&["documents"], &ArchiveSigningKeys::default());
        let field = field_of(verifier.push(&archive(ROWS)).expect_err("users is not known"));
        assert_eq!(field, "archive.manifest.tables[0]");
    }

    fn keys(ids: &[&str]) -> ArchiveSigningKeys {
        let entries: Vec<String> = ids
            .iter()
            .map(|id| {
                use base64::Engine;
                format!("{id}:{}", base64::engine::general_purpose::STANDARD.encode(format!("{id:-<32}")))
            })
            .collect();
        ArchiveSigningKeys::parse(&entries.join(",")).expect("keys")
    }

    /// The reason and the description of the signature refusal.
    fn signature_refusal(error: Error) -> String {
        assert_eq!(error.reason(), Reason::ArchiveSignatureInvalid, "{error:?}");
        let violation = error.violations().first().cloned().expect("a field violation");
        assert_eq!(violation.field, "archive.signature");
        violation.description
    }

    #[test]
    fn a_signed_archive_is_version_2_with_its_signature_as_line_2_and_verifies_in_pieces_of_any_size() {
        let signed = archive_under(ROWS, &keys(&["k1"]));
        let text = String::from_utf8(signed.clone()).expect("utf-8");
        let second = text.lines().nth(1).expect("line 2");
        assert!(second.starts_with(r#"{"signature":{"key_id":"k1","algorithm":"HMAC-SHA256","mac":""#), "{second}");
        assert!(text.starts_with(r#"{"format":"tenantd-archive","version":2,"#));
        for piece in [1, 7, signed.len()] {
            let lines = verify_under(&signed, piece, &keys(&["k1"])).expect("valid");
            assert_eq!(lines.len(), 4, "the manifest and three rows, piece {piece}");
        }
        for cut in 0..signed.len() {
            assert!(verify_under(&signed[..cut], 5, &keys(&["k1"])).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn the_manifest_of_a_signed_archive_is_handed_back_only_with_its_signature() {
        let signed = archive_under(ROWS, &keys(&["k1"]));
        let end = signed.iter().position(|byte| *byte == b'\n').expect("line 1") + 1;
        let mut verifier = Verifier::new(&["users", "documents"], &keys(&["k1"]));
        assert_eq!(verifier.push(&signed[..end]).expect("the manifest line").len(), 0);
        assert!(verifier.manifest().is_none(), "not before its signature");
        let lines = verifier.push(&signed[end..]).expect("the rest");
        assert!(matches!(lines.first(), Some(ArchiveLine::Manifest(_))), "then the manifest, first");
        assert!(verifier.manifest().is_some());
    }

    #[test]
    fn a_signature_that_is_missing_unknown_wrong_or_unverifiable_is_refused_and_says_which() {
        let signed = archive_under(ROWS, &keys(&["old"]));
        assert!(verify_under(&signed, 9, &keys(&["new", "old"])).is_ok(), "positive control: an old key verifies");
        let unknown = signature_refusal(verify_under(&signed, 9, &keys(&["new"])).expect_err("old is gone"));
        assert!(unknown.contains(r#"key id "old""#), "{unknown}");
        let other_secret = {
            use base64::Engine;
            ArchiveSigningKeys::parse(&format!("old:{}", base64::engine::general_purpose::STANDARD.encode([1u8; 32])))
                .expect("keys")
        };
        let wrong = signature_refusal(verify_under(&signed, 9, &other_secret).expect_err("another secret"));
        assert!(wrong.contains("does not match"), "{wrong}");
        let keyless = signature_refusal(verify(&signed, 9).expect_err("no key"));
        assert!(keyless.contains("no key to verify it"), "{keyless}");
        let unsigned = archive(ROWS);
        assert!(verify(&unsigned, 9).is_ok(), "positive control: unsigned without keys");
        let missing = signature_refusal(verify_under(&unsigned, 9, &keys(&["old"])).expect_err("unsigned"));
        assert!(missing.contains("is missing"), "{missing}");

        // A manifest changed after signing: its MAC no longer matches, though it parses.
        let text = String::from_utf8(signed).expect("utf-8");
        let changed = text.replacen(r#""tenantd_version":"test""#, r#""tenantd_version":"tset""#, 1);
        let changed = signature_refusal(verify_under(changed.as_bytes(), 9, &keys(&["old"])).expect_err("changed"));
        assert!(changed.contains("does not match"), "{changed}");
        // Line 2 a data line instead of a signature.
        let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
        lines.remove(1);
        let dropped = signature_refusal(verify_under(lines.concat().as_bytes(), 9, &keys(&["old"])).expect_err("gone"));
        assert!(dropped.contains("is missing"), "{dropped}");
    }
}

//! The `bulk` scenario: one recipient file of N generated lines posted to
//! `POST /v1/campaigns/{id}/assignments/bulk`, timed to the last row (each
//! row is sent only once durable, so the last row's arrival is when the
//! whole file is durable), then audited: a row a line in order, every row
//! `created` with a distinct code, and a resend of the file answering
//! `existing` with the same code on every line.
//!
//! It is one streamed request, not a stream of operations, so it has its
//! own small client here rather than the driver's: the file is written
//! from a task while the answer is read, since the server answers rows
//! while it still reads the file.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::HttpClient;
use crate::plan::Rng;
use crate::targets::redeemd::{create_campaign, wait_ready};

/// How long one bulk request may take, head to last row.
const BULK_TIMEOUT: Duration = Duration::from_secs(600);
/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Largest answer accepted: rows of 1,000,000 recipients are ~55 MB.
const ANSWER_BYTES_MAX: usize = 1 << 30;
/// Spare codes over the file's lines, so the pool never runs out.
const SPARE_CODES_PERCENT: u64 = 10;

/// What one send of the file took.
#[derive(Debug)]
pub struct Timing {
    /// From the first byte sent to the answer's head.
    pub head: Duration,
    /// From the first byte sent to the last row (the answer's end).
    pub last_row: Duration,
}

/// A bulk run's results.
#[derive(Debug)]
pub struct BulkResult {
    pub campaign: String,
    pub lines: u64,
    pub first: Timing,
    pub resend: Timing,
    /// Each failed check, in words; empty when the audit passed.
    pub failures: Vec<String>,
}

/// Recipient `i` of a run: unique within the run, and needing no CSV
/// quoting, so rows can be split on commas.
fn recipient(run: &str, i: u64) -> String {
    format!("{run}-{i}@example.com")
}

/// Creates a campaign with room for `lines` recipients, sends the file
/// twice, and audits both answers.
pub async fn run(addr: SocketAddr, token: Option<&str>, lines: u64) -> anyhow::Result<BulkResult> {
    let mut http = HttpClient::new(addr, token);
    wait_ready(&mut http).await?;
    let mut rng = Rng::seeded(u64::from(std::process::id()));
    let codes = lines + (lines * SPARE_CODES_PERCENT / 100).max(1);
    let campaign = create_campaign(&mut http, "bulk", codes, &mut rng).await?;
    let run_id = format!("r{:08x}", rng.next_u64() as u32);
    let mut file = Vec::with_capacity(lines as usize * 40);
    for i in 0..lines {
        file.extend_from_slice(recipient(&run_id, i).as_bytes());
        file.push(b'\n');
    }
    let path = format!("/v1/campaigns/{campaign}/assignments/bulk");
    eprintln!(
        "sending {lines} recipients ({} bytes) to {path} ...",
        file.len()
    );
    let (first, answer) = post_file(addr, token, &path, &file).await?;
    let mut failures = Vec::new();
    let codes = audit_rows(&answer, &run_id, lines, "created", None, &mut failures);
    eprintln!("sending the file again ...");
    let (resend, again) = post_file(addr, token, &path, &file).await?;
    audit_rows(
        &again,
        &run_id,
        lines,
        "existing",
        Some(&codes),
        &mut failures,
    );
    Ok(BulkResult {
        campaign,
        lines,
        first,
        resend,
        failures,
    })
}

/// Checks an answer: the header, then one row a line in file order with
/// `status` and a code; distinct codes, or when `same` is given, exactly
/// those codes. Returns the codes in row order.
fn audit_rows(
    answer: &[u8],
    run_id: &str,
    lines: u64,
    status: &str,
    same: Option<&[String]>,
    failures: &mut Vec<String>,
) -> Vec<String> {
    let text = String::from_utf8_lossy(answer);
    let mut rows = text.lines();
    if rows.next() != Some("recipient,code,status") {
        failures.push("the answer does not start with the header recipient,code,status".into());
    }
    let mut codes = Vec::with_capacity(lines as usize);
    let mut wrong = 0u64;
    let mut first_wrong = None;
    for (i, row) in rows.enumerate() {
        let fields: Vec<&str> = row.split(',').collect();
        let expected_code = same.and_then(|s| s.get(i)).map(String::as_str);
        let ok = fields.len() == 3
            && fields[0] == recipient(run_id, i as u64)
            && !fields[1].is_empty()
            && fields[2] == status
            && expected_code.is_none_or(|c| c == fields[1]);
        if !ok {
            wrong += 1;
            first_wrong.get_or_insert_with(|| format!("row {}: {row:?}", i + 1));
        }
        codes.push(fields.get(1).copied().unwrap_or("").to_owned());
    }
    if codes.len() as u64 != lines {
        failures.push(format!(
            "{} rows for {lines} lines (status {status})",
            codes.len()
        ));
    }
    if wrong > 0 {
        failures.push(format!(
            "{wrong} rows are not `recipient,code,{status}` in file order{}; first: {}",
            if same.is_some() {
                " with the first send's code"
            } else {
                ""
            },
            first_wrong.unwrap_or_default()
        ));
    }
    let distinct: HashSet<&str> = codes.iter().map(String::as_str).collect();
    if distinct.len() != codes.len() {
        failures.push(format!(
            "{} rows share a code with another row",
            codes.len() - distinct.len()
        ));
    }
    codes
}

/// Posts `file` as `text/csv` on a fresh connection and reads the whole
/// answer; returns the timings and the decoded body. Any status but 200
/// is an error naming the server's answer.
async fn post_file(
    addr: SocketAddr,
    token: Option<&str>,
    path: &str,
    file: &[u8],
) -> anyhow::Result<(Timing, Vec<u8>)> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .context("connect to redeemd")?;
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/csv\r\nContent-Length: {}\r\nConnection: close\r\n",
        file.len()
    )
    .into_bytes();
    if let Some(token) = token {
        request.extend_from_slice(format!("Authorization: Bearer {token}\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(file);
    let started = Instant::now();
    // The write half stays open until the answer is read: hyper closes a
    // connection whose peer half-closes mid-request, and dropping a tokio
    // write half shuts it down.
    let send = async {
        // The server may answer early (401, 413) and close; its answer says why.
        let _ = writer.write_all(&request).await;
    };
    let read = async {
        let mut raw = Vec::with_capacity(READ_CHUNK_BYTES);
        let mut head_at = None;
        let mut last_at = started.elapsed();
        loop {
            raw.reserve(READ_CHUNK_BYTES);
            let n = reader.read_buf(&mut raw).await?;
            if n == 0 {
                break;
            }
            last_at = started.elapsed();
            head_at.get_or_insert(last_at);
            if raw.len() > ANSWER_BYTES_MAX {
                bail!("the answer is larger than {ANSWER_BYTES_MAX} bytes");
            }
        }
        Ok::<_, anyhow::Error>((raw, head_at.unwrap_or(last_at), last_at))
    };
    let both = async { tokio::join!(send, read).1 };
    let (raw, head, last_row) = tokio::time::timeout(BULK_TIMEOUT, both)
        .await
        .with_context(|| format!("no complete answer within {BULK_TIMEOUT:?}"))??;
    drop(writer);
    let (status, body) = decode(&raw)?;
    if status != 200 {
        bail!(
            "bulk assign: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok((Timing { head, last_row }, body))
}

/// The status and decoded body of a whole HTTP/1.1 response.
fn decode(raw: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head_len) = response.parse(raw)? else {
        bail!("the connection closed in the answer's head");
    };
    let status = response.code.unwrap_or(0);
    let chunked = response.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("chunked")
    });
    let rest = &raw[head_len..];
    if !chunked {
        return Ok((status, rest.to_vec()));
    }
    let mut body = Vec::with_capacity(rest.len());
    let mut at = 0;
    loop {
        let line_end = rest[at..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("the answer ended inside a chunk's size line")?;
        let line = std::str::from_utf8(&rest[at..at + line_end])?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size line {line:?}"))?;
        at += line_end + 2;
        if size == 0 {
            return Ok((status, body));
        }
        let chunk = rest
            .get(at..at + size)
            .context("the answer ended inside a chunk: it was cut short")?;
        body.extend_from_slice(chunk);
        at += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_answers_decode_and_short_ones_are_refused() {
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nab\nc\r\n2\r\nd\n\r\n0\r\n\r\n";
        assert_eq!(decode(raw).unwrap(), (200, b"ab\ncd\n".to_vec()));
        let cut = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nab";
        assert!(decode(cut).is_err());
        let error = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(decode(error).unwrap(), (401, b"{}".to_vec()));
    }

    #[test]
    fn the_audit_checks_order_statuses_and_distinct_codes() {
        let run = "r1";
        let good = format!(
            "recipient,code,status\n{},A,created\n{},B,created\n",
            recipient(run, 0),
            recipient(run, 1)
        );
        let mut failures = Vec::new();
        let codes = audit_rows(good.as_bytes(), run, 2, "created", None, &mut failures);
        assert!(failures.is_empty(), "{failures:?}");
        let again = good.replace("created", "existing");
        audit_rows(
            again.as_bytes(),
            run,
            2,
            "existing",
            Some(&codes),
            &mut failures,
        );
        assert!(failures.is_empty(), "{failures:?}");

        let shared = good.replace(",B,", ",A,");
        audit_rows(shared.as_bytes(), run, 2, "created", None, &mut failures);
        assert_eq!(failures.len(), 1, "{failures:?}");
        failures.clear();
        let other = good.replace(",B,", ",C,").replace("created", "existing");
        audit_rows(
            other.as_bytes(),
            run,
            2,
            "existing",
            Some(&codes),
            &mut failures,
        );
        assert_eq!(failures.len(), 1, "{failures:?}");
        failures.clear();
        audit_rows(good.as_bytes(), run, 3, "created", None, &mut failures);
        assert_eq!(failures.len(), 1, "a missing row: {failures:?}");
    }
}

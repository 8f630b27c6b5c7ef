//! Operator commands: `wal verify`, `wal dump`, `wal replay`, `token add`.

use std::path::Path;

use redeem_engine::{Config, Engine, NullJournal, Record};

use crate::app::wal_dir;
use crate::{render, timefmt};

/// `redeemd wal verify`: the exit code. 0 on a clean log (a torn tail is
/// reported, not corruption), 1 on corruption, 2 when it cannot check
/// (says why). Beside a running server it reads the log as it is written.
pub fn verify(data_dir: &Path) -> u8 {
    match redeem_wal::verify(&wal_dir(data_dir)) {
        Ok(report) => {
            println!(
                "ok: {} segment(s), records {}..={} ({}), snapshot at {}",
                report.segments,
                report.first_lsn,
                report.last_lsn,
                report.records,
                report
                    .snapshot_lsn
                    .map_or_else(|| "none".to_owned(), |l| l.to_string())
            );
            if report.live {
                println!(
                    "a running server has the log open: checked as of now; records it is still writing are not checked"
                );
            }
            if let Some(torn) = report.torn_tail {
                if report.live {
                    println!("tail being written (or torn): {torn}");
                } else {
                    println!("torn tail (unacknowledged, will be truncated on start): {torn}");
                }
            }
            for (path, problem) in report.ignored_snapshots {
                println!("ignored snapshot {}: {problem}", path.display());
            }
            0
        }
        Err(redeem_wal::VerifyError::Corrupt(c)) => {
            println!("CORRUPT: {c}");
            1
        }
        Err(e) => {
            eprintln!("redeemd: cannot verify the log: {e}");
            2
        }
    }
}

/// Loads the state the records of `report` start from into `engine`: none
/// when the log still begins at LSN 1 (`from_snapshot` false), else the
/// newest snapshot. Returns the LSN the state covers; records up to it
/// must not be applied again.
fn start_state<J: redeem_engine::Journal>(
    engine: &Engine<J>,
    report: &redeem_wal::Report,
    from_snapshot: bool,
) -> anyhow::Result<u64> {
    if !from_snapshot && report.first_lsn <= 1 {
        return Ok(0);
    }
    let Some(snapshot) = &report.snapshot else {
        anyhow::ensure!(
            report.first_lsn <= 1,
            "the log starts at LSN {} and no snapshot covers the records before it",
            report.first_lsn
        );
        return Ok(0);
    };
    engine
        .restore(&snapshot.blob)
        .map_err(|e| anyhow::anyhow!("snapshot at LSN {} does not restore: {e}", snapshot.lsn))?;
    Ok(snapshot.lsn)
}

/// `redeemd wal dump`: one line per record, text or JSON. Once older
/// segments are gone it starts from the newest snapshot, which names the
/// codes of the records the log still holds.
pub fn dump(data_dir: &Path, from: u64, code: Option<&str>, json: bool) -> anyhow::Result<()> {
    let (report, mut records) = redeem_wal::dump(&wal_dir(data_dir))?;
    // Codes print by campaign and slot; a replica engine names them.
    let engine = Engine::new(
        NullJournal::default(),
        Config::default(),
        render::renderer(),
    );
    let restored = start_state(&engine, &report, false)?;
    let wanted = code.map(|c| c.to_ascii_uppercase().replace(['-', ' '], ""));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    use std::io::Write;
    if restored > 0 {
        writeln!(
            out,
            "# the log starts at LSN {} (older records were deleted); state from the snapshot at LSN {restored}",
            report.first_lsn
        )?;
    }
    while let Some(next) = records.next_record() {
        let record = next?;
        let decoded = Record::decode(record.record_type, record.payload)
            .map_err(|e| anyhow::anyhow!("LSN {}: {e}", record.lsn))?;
        // Records the snapshot covers are in its state already.
        if record.lsn > restored {
            engine.apply_replayed(record.lsn, &decoded)?;
        }
        if record.lsn < from {
            continue;
        }
        let code_str = decoded
            .code()
            .and_then(|(c, slot)| engine.campaign_by_number(c).map(|c| c.code_of(slot)));
        if let Some(w) = &wanted
            && code_str.as_ref().map(|c| c.replace('-', "")) != Some(w.clone())
        {
            continue;
        }
        if json {
            let line = serde_json::json!({
                "lsn": record.lsn,
                "type": record.record_type,
                "kind": decoded.kind().event_name(),
                "at": timefmt::format(decoded.at()),
                "code": code_str,
                "record": describe(&decoded),
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(
                out,
                "{} {} {} {} {}",
                record.lsn,
                timefmt::format(decoded.at()),
                decoded.kind().event_name(),
                code_str.unwrap_or_else(|| "-".into()),
                describe(&decoded)
            )?;
        }
    }
    if let Some(torn) = report.torn_tail {
        writeln!(out, "# torn tail: {torn}")?;
    }
    Ok(())
}

/// A record for people: its fields, with a stored response's body as text
/// and a campaign key hidden.
fn describe(record: &Record<'_>) -> String {
    match record {
        Record::IdempotentResponse {
            key,
            fingerprint,
            status,
            body,
            ..
        } => format!(
            "IdempotentResponse {{ key: {key:?}, fingerprint: {fingerprint:x}, status: {status}, body: {:?} }}",
            hide_secrets(&String::from_utf8_lossy(body))
        ),
        Record::CampaignCreated {
            campaign,
            spec,
            idem,
            ..
        } => format!(
            "CampaignCreated {{ campaign: {campaign}, key: <hidden>, spec: {spec:?}, idem: {idem:?} }}"
        ),
        Record::WebhookCreated {
            id,
            url,
            events,
            campaigns,
            description,
            ..
        } => format!(
            "WebhookCreated {{ id: {id:?}, secret: <hidden>, url: {url:?}, events: {events:?}, campaigns: {campaigns:?}, description: {description:?} }}"
        ),
        other => format!("{other:?}"),
    }
}

/// `text` with every webhook secret (`whsec_` and what follows) hidden: a
/// keyed webhook creation stores its answer, secret included, so a retry
/// gets the same answer.
fn hide_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(crate::webhooks::SECRET_PREFIX) {
        out.push_str(&rest[..at]);
        out.push_str("<hidden>");
        rest = &rest[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `redeemd wal replay`: rebuild the state in memory (the newest snapshot,
/// then the log after it), print stats and rate.
pub fn replay(data_dir: &Path) -> anyhow::Result<()> {
    let (report, mut records) = redeem_wal::dump(&wal_dir(data_dir))?;
    let engine = Engine::new(
        NullJournal::default(),
        Config::default(),
        render::renderer(),
    );
    let restored = start_state(&engine, &report, true)?;
    if restored > 0 {
        println!("restored the snapshot at LSN {restored}");
        // Records are dense from `first_lsn`: skip those the snapshot covers.
        for _ in report.first_lsn..=restored {
            records.next_record().transpose()?;
        }
    }
    let summary = crate::app::apply_records(&engine, &mut records, report.last_lsn, true)?;
    println!(
        "replayed {} records in {:.3} s ({:.0} records/s)",
        summary.records,
        summary.elapsed.as_secs_f64(),
        summary.rate()
    );
    let now = timefmt::now();
    for campaign in engine.campaigns() {
        let s = campaign.stats(now);
        println!(
            "{}: total {} available {} assigned {} reserved {} redeemed {} voided {} test_assignments {}",
            campaign.id(),
            s.total,
            s.available,
            s.assigned,
            s.reserved,
            s.redeemed,
            s.voided,
            s.test_assignments
        );
    }
    // The process exits next: freeing a replayed log's metadata entry by
    // entry took a fifth of the command's time on 10 M records.
    std::mem::forget(engine);
    Ok(())
}

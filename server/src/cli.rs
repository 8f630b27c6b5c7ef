//! Operator commands: `wal verify`, `wal dump`, `wal replay`, `token add`.

use std::path::Path;

use redeem_engine::{Config, Engine, NullJournal, Record};

use crate::app::wal_dir;
use crate::{render, timefmt};

/// `redeemd wal verify`: exit 0 on a clean log (a torn tail is reported,
/// not corruption), 1 on corruption.
pub fn verify(data_dir: &Path) -> anyhow::Result<bool> {
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
            if let Some(torn) = report.torn_tail {
                println!("torn tail (unacknowledged, will be truncated on start): {torn}");
            }
            for (path, problem) in report.ignored_snapshots {
                println!("ignored snapshot {}: {problem}", path.display());
            }
            Ok(true)
        }
        Err(redeem_wal::VerifyError::Corrupt(c)) => {
            println!("CORRUPT: {c}");
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// `redeemd wal dump`: one line per record, text or JSON.
pub fn dump(data_dir: &Path, from: u64, code: Option<&str>, json: bool) -> anyhow::Result<()> {
    let (report, mut records) = redeem_wal::dump(&wal_dir(data_dir))?;
    // Codes print by campaign and slot; a replica engine names them.
    let engine = Engine::new(
        NullJournal::default(),
        Config::default(),
        render::renderer(),
    );
    let wanted = code.map(|c| c.to_ascii_uppercase().replace(['-', ' '], ""));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    use std::io::Write;
    while let Some(next) = records.next_record() {
        let record = next?;
        let decoded = Record::decode(record.record_type, record.payload)
            .map_err(|e| anyhow::anyhow!("LSN {}: {e}", record.lsn))?;
        engine.apply_replayed(record.lsn, &decoded)?;
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
            String::from_utf8_lossy(body)
        ),
        Record::CampaignCreated {
            campaign,
            spec,
            idem,
            ..
        } => format!(
            "CampaignCreated {{ campaign: {campaign}, key: <hidden>, spec: {spec:?}, idem: {idem:?} }}"
        ),
        other => format!("{other:?}"),
    }
}

/// `redeemd wal replay`: rebuild the state in memory, print stats and rate.
pub fn replay(data_dir: &Path) -> anyhow::Result<()> {
    let (report, mut records) = redeem_wal::dump(&wal_dir(data_dir))?;
    if report.snapshot_lsn.is_some() {
        anyhow::bail!("this log starts from a snapshot; replay reads logs without one");
    }
    let engine = Engine::new(
        NullJournal::default(),
        Config::default(),
        render::renderer(),
    );
    let summary = crate::app::apply_records(&engine, &mut records, u64::MAX, true)?;
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
    Ok(())
}

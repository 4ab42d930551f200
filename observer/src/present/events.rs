//! `--format events`: one JSON line per verdict change, and a closing line at exit.

use std::{collections::BTreeMap, io::Write};

use serde::Serialize;

use super::report::{Report, SCHEMA_VERSION};
use crate::verdict::{Cause, Change, Layer, State};

#[derive(Serialize)]
struct ChangeLine<'a> {
    schema: u32,
    host: &'a str,
    #[serde(flatten)]
    change: &'a Change,
    /// The layer named as the likely cause at this moment, if any.
    cause: Option<Layer>,
}

#[derive(Serialize)]
struct FinalLine<'a> {
    schema: u32,
    ts: &'a str,
    host: &'a str,
    #[serde(rename = "final")]
    is_final: bool,
    verdicts: BTreeMap<&'static str, State>,
    cause: &'a Option<Cause>,
}

pub fn write_changes(out: &mut impl Write, r: &Report, changes: &[Change]) -> std::io::Result<()> {
    let cause = r.cause.as_ref().map(|c| c.layer);
    for change in changes {
        serde_json::to_writer(&mut *out, &ChangeLine { schema: SCHEMA_VERSION, host: &r.host, change, cause })?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

pub fn write_final(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    let verdicts = Layer::ALL.iter().map(|l| (l.key(), r.verdicts.get(*l).verdict)).collect();
    serde_json::to_writer(
        &mut *out,
        &FinalLine { schema: SCHEMA_VERSION, ts: &r.ts, host: &r.host, is_final: true, verdicts, cause: &r.cause },
    )?;
    out.write_all(b"\n")?;
    out.flush()
}

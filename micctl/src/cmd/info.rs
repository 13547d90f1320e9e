//! `micctl info CARD`: every sysfs attribute, and the useful debugfs facts:
//! the POST code, the SMPT entries in use, the device page's bootparam;
//! then mpssd's view of the card ([`crate::supervision`]: its supervisor,
//! its virtio devices with their counters, its last crash), or that mpssd
//! is not running.

use std::fmt::Write as _;
use std::time::Instant;

use libmic::attrs::escape_untrusted;
use libmic::{Attr, Card, DpSummary, MicStatus};
use serde_json::{Map, Value, json};

use crate::Ctx;
use crate::cli::InfoArgs;
use crate::exit::Exit;
use crate::output::{self, Style, state_style};
use crate::supervision;

/// The bootparam fields of a `dp` dump as a JSON object: key → value,
/// numbers as numbers.
#[must_use]
pub fn bootparam_json(dp: &DpSummary) -> Map<String, Value> {
    let mut m = Map::new();
    for (k, v) in &dp.bootparam {
        let value = v.parse::<i64>().map_or_else(|_| json!(v), |n| json!(n));
        m.insert(k.clone(), value);
    }
    m
}

pub fn run(ctx: &Ctx, args: &InfoArgs) -> anyhow::Result<Exit> {
    let card = crate::select::Selection::parse(&[args.card.as_str()])?;
    let cards = card.resolve(&ctx.root)?;
    let [card] = cards.as_slice() else {
        return Err(crate::UsageError(format!(
            "info takes exactly one card, not {}",
            libmic::attrs::quote_value(&args.card)
        ))
        .into());
    };
    let asking = supervision::ask(&ctx.root, Instant::now() + supervision::ANSWER_LIMIT);
    let mut v = collect(card)?;
    let (socket, view) = asking.answer();
    v["supervision"] = view.card(card.id()).map_or(Value::Null, supervision::card_json);
    if ctx.json {
        output::print_json(&output::document(
            "info",
            json!({ "card": v, "mpssd": view.to_json(&socket) }),
        ))?;
    } else {
        output::print_text(&format!(
            "{}{}",
            human(&v, ctx.color),
            supervision::info_section(&view, card.id(), ctx.color)
        ))?;
    }
    if let Some(e) = view.error() {
        eprintln!("micctl: {}", supervision::error_text(e));
    }
    Ok(view.exit())
}

fn hex(v: Option<u64>) -> Value {
    v.map_or(Value::Null, |a| json!(format!("{a:#x}")))
}

/// Everything known about the card, as the JSON `card` object.
pub fn collect(card: &Card) -> libmic::Result<Value> {
    let info = card.info()?;
    let mut problems: Vec<Value> = info
        .problems
        .iter()
        .map(|(a, e)| json!({ "file": a.file_name(), "error": e }))
        .collect();
    let mut debug_problem = |file: &str, e: &libmic::Error| {
        problems.push(json!({ "file": file, "error": e.to_string() }));
    };
    let post_code = card.post_code().unwrap_or_else(|e| {
        debug_problem("post_code", &e);
        None
    });
    let smpt = match card.smpt() {
        Ok(s) => json!({
            "entries": s.entries,
            "in_use": s.in_use.iter().map(|e| json!({
                "index": e.index, "dma_addr": e.dma_addr, "refcount": e.refcount,
            })).collect::<Vec<_>>(),
        }),
        Err(e) => {
            debug_problem("smpt", &e);
            Value::Null
        }
    };
    let dp = match card.dp() {
        Ok(d) => Value::Object(bootparam_json(&d)),
        Err(e) => {
            debug_problem("dp", &e);
            Value::Null
        }
    };
    Ok(json!({
        "card": info.name,
        "id": info.id,
        "sysfs": {
            "state": info.state.as_str(),
            "shutdown_status": info.shutdown_status.map(MicStatus::as_str),
            "family": info.family,
            "stepping": info.stepping,
            "cmdline": info.cmdline,
            "firmware": info.firmware,
            "ramdisk": info.ramdisk,
            "bootmode": info.bootmode.map(libmic::BootMode::as_str),
            "log_buf_addr": hex(info.log_buf_addr),
            "log_buf_len": hex(info.log_buf_len),
            "ipaddr": info.ipaddr.map(|a| a.to_string()),
        },
        "debugfs": {
            "post_code": post_code,
            "smpt": smpt,
            "device_page": dp,
        },
        "problems": problems,
    }))
}

fn human(v: &Value, color: bool) -> String {
    // Attribute and dump contents are driver or card controlled: escaped.
    let text = |x: &Value| match x {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => escape_untrusted(s),
        other => other.to_string(),
    };
    let mut out = format!(
        "{}\n",
        Style::Bold.paint(v["card"].as_str().unwrap_or("?"), color)
    );
    let mut line = |k: &str, val: String| {
        let _ = writeln!(out, "  {k:<18}{val}");
    };
    for a in Attr::ALL {
        let name = a.file_name();
        let mut val = text(&v["sysfs"][name]);
        if a == Attr::State {
            if let Some(s) = libmic::MicState::from_sysfs(&val) {
                val = state_style(s).paint(&val, color);
            }
        }
        line(name, val);
    }
    let d = &v["debugfs"];
    line("post_code", text(&d["post_code"]));
    if d["smpt"].is_null() {
        line("smpt", "-".to_owned());
    } else {
        let used = d["smpt"]["in_use"].as_array().cloned().unwrap_or_default();
        let list: Vec<String> = used
            .iter()
            .map(|e| {
                format!(
                    "#{} {} (refcount {})",
                    e["index"],
                    text(&e["dma_addr"]),
                    e["refcount"]
                )
            })
            .collect();
        let mut s = format!("{} of {} entries in use", used.len(), d["smpt"]["entries"]);
        if !list.is_empty() {
            s.push_str(": ");
            s.push_str(&list.join(", "));
        }
        line("smpt", s);
    }
    match d["device_page"].as_object() {
        None => line("device page", "-".to_owned()),
        Some(m) if m.is_empty() => line("device page", "-".to_owned()),
        Some(m) => {
            let s: Vec<String> = m.iter().map(|(k, x)| format!("{k} {}", text(x))).collect();
            line("device page", s.join(", "));
        }
    }
    if let Some(p) = v["problems"].as_array().filter(|p| !p.is_empty()) {
        out.push_str("problems\n");
        for x in p {
            let _ = writeln!(out, "  {}: {}", text(&x["file"]), text(&x["error"]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootparam_numbers_are_numbers() {
        let m = bootparam_json(&libmic::debugfs::parse_dp(
            "Bootparam: magic 0xc0ffee00\nBootparam: h2c_shutdown_db -1\nnoise\nBootparam: x\n",
        ));
        assert_eq!(m["magic"], json!("0xc0ffee00"));
        assert_eq!(m["h2c_shutdown_db"], json!(-1));
        assert_eq!(m.len(), 2);
    }
}

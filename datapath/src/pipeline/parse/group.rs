//! Groups: `group_id=1,type=select,selection_method=hash,fields(ip_src),
//! bucket=bucket_id:0,weight:100,actions=output:1,bucket=...`.

use super::actions::{Ctx, parse_actions};
use super::value::{parse_field_value, parse_uint};
use super::{FileError, Items, MatchBuilder, ParseError, need_value, parse_file};
use crate::pipeline::fields;
use crate::pipeline::ir::{Bucket, Group, GroupType};

/// Byte offsets of each `bucket=` (or `bucket:`) keyword at item level.
fn bucket_starts(text: &str) -> Vec<usize> {
    Items::new(text, 0)
        .filter(|it| it.key == "bucket" && it.value.is_some())
        .map(|it| it.key_pos)
        .collect()
}

/// Parse one group as `ovs-ofctl add-group` does.
pub fn parse_group(text: &str) -> Result<Group, ParseError> {
    // OVS splits the text at each "bucket=": everything before the first is
    // the group's own properties; each bucket runs to the next "bucket=".
    let starts = bucket_starts(text);
    let head_end = starts.first().copied().unwrap_or(text.len());
    let mut g = Group {
        id: 0,
        kind: GroupType::All,
        selection_method: None,
        fields: Vec::new(),
        selection_param: 0,
        buckets: Vec::new(),
    };
    let mut have_id = false;
    let mut have_type = false;
    for it in Items::new(&text[..head_end], 0) {
        let (k, kp, v, vp) = (it.key, it.key_pos, it.value, it.value_pos);
        match k {
            "group_id" => {
                let s = need_value(k, kp, v)?;
                g.id = parse_uint(s)
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|&n| n <= 0xffff_ff00)
                    .ok_or_else(|| {
                        ParseError::new(vp, s, "bad group_id", "a group number 0..4294967040")
                    })?;
                have_id = true;
            }
            "type" => {
                let s = need_value(k, kp, v)?;
                g.kind = match s {
                    "all" => GroupType::All,
                    "select" => GroupType::Select,
                    "indirect" => GroupType::Indirect,
                    "ff" | "fast_failover" => GroupType::FastFailover,
                    _ => {
                        return Err(ParseError::new(
                            vp,
                            s,
                            "unknown group type",
                            "all, select, indirect or ff",
                        ));
                    }
                };
                have_type = true;
            }
            "selection_method" => {
                let s = need_value(k, kp, v)?;
                if !matches!(s, "hash" | "dp_hash") {
                    return Err(ParseError::new(
                        vp,
                        s,
                        "unknown selection_method",
                        "hash or dp_hash",
                    ));
                }
                g.selection_method = Some(s.to_string());
            }
            "selection_method_param" => {
                let s = need_value(k, kp, v)?;
                g.selection_param = parse_uint(s)
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| {
                        ParseError::new(vp, s, "bad selection_method_param", "a 64-bit number")
                    })?;
            }
            "fields" => {
                let s = need_value(k, kp, v)?;
                for f in Items::new(s, vp) {
                    let def = fields::lookup(f.key).ok_or_else(|| {
                        ParseError::new(
                            f.key_pos,
                            f.key,
                            "unknown field",
                            "a field name such as ip_src",
                        )
                    })?;
                    let mask = match f.value {
                        Some(m) => Some(parse_field_value(def, m, f.value_pos, false)?.0),
                        None => None,
                    };
                    g.fields.push((def.id, mask));
                }
            }
            _ => {
                return Err(ParseError::new(
                    kp,
                    k,
                    "unknown group property",
                    "group_id, type, selection_method, selection_method_param, fields or bucket",
                ));
            }
        }
    }
    if !have_id {
        return Err(ParseError::new(
            0,
            text,
            "missing group_id in",
            "group_id=N",
        ));
    }
    if !have_type {
        return Err(ParseError::new(
            0,
            text,
            "missing type in",
            "type=all|select|indirect|ff",
        ));
    }
    if !g.fields.is_empty() && g.selection_method.as_deref() != Some("hash") {
        return Err(ParseError::new(
            0,
            "fields",
            "fields given without",
            "selection_method=hash",
        ));
    }
    for (i, &s) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(text.len());
        // Skip "bucket" and its delimiter.
        let body = s + "bucket".len() + 1;
        g.buckets.push(parse_bucket(&text[body..end], body)?);
    }
    if g.kind == GroupType::Indirect && g.buckets.len() != 1 {
        return Err(ParseError::new(
            0,
            text,
            "indirect group must have exactly one bucket",
            "one bucket=",
        ));
    }
    Ok(g)
}

fn parse_bucket(text: &str, base: usize) -> Result<Bucket, ParseError> {
    let mut b = Bucket {
        id: None,
        weight: 1,
        watch_port: None,
        actions: Vec::new(),
    };
    let empty = MatchBuilder::default();
    let mut actions_at = None;
    for it in Items::new(text, base) {
        let (k, kp, v, vp) = (it.key, it.key_pos, it.value, it.value_pos);
        let num = |max: u128| -> Result<u128, ParseError> {
            let s = need_value(k, kp, v)?;
            parse_uint(s).filter(|&n| n <= max).ok_or_else(|| {
                ParseError::new(vp, s, format!("bad {k}"), format!("a number <= {max}"))
            })
        };
        match k {
            "bucket_id" => b.id = Some(num(0xffff_ff00)? as u32),
            "weight" => b.weight = num(0xffff)? as u16,
            "watch_port" => {
                let s = need_value(k, kp, v)?;
                b.watch_port =
                    Some(super::value::parse_port(s).ok_or_else(|| {
                        ParseError::new(vp, s, "bad watch_port", "a port number")
                    })?);
            }
            "watch_group" => {
                num(0xffff_ffff)?;
            }
            "actions" | "action" => {
                actions_at = Some(vp);
                break;
            }
            _ => {
                actions_at = Some(kp);
                break;
            }
        }
    }
    // A trailing comma before the next "bucket=" is a separator, not an
    // empty action.
    if let Some(at) = actions_at {
        let rel = at - base;
        b.actions = parse_actions(&text[rel..], at, &empty, 0, Ctx::Bucket)?;
    }
    Ok(b)
}

/// Parse a file in `ovs-ofctl add-groups` format (all or nothing).
pub fn parse_groups(file: &str, text: &str) -> Result<Vec<Group>, FileError> {
    parse_file(file, text, parse_group)
}

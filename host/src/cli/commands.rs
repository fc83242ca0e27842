//! The client commands: each is one API request, printed for a person (or as
//! JSON with `--json`).

use super::client::Client;
use anstyle::{AnsiColor, Style};
use anyhow::{Context, Result};
use hyper::Method;
use serde_json::{Value, json};
use std::io::Write;

fn parse_json(what: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).with_context(|| format!("{what} is not valid JSON: {text}"))
}

/// Child ids end up in the URL path; the API validates them, this only keeps
/// the request well-formed.
fn path_id(id: &str) -> Result<&str> {
    crate::names::validate_id(id).map_err(anyhow::Error::msg)?;
    Ok(id)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints rows as aligned columns: the header bold and, where `style` gives
/// one, a cell coloured. anstream drops the colours when stdout is not a
/// terminal or `NO_COLOR` is set, so pipes and `--json`-less scripts get
/// plain text.
fn table(header: &[&str], rows: Vec<Vec<String>>, style: impl Fn(usize, &str) -> Style) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = anstream::stdout().lock();
    let mut line = |cells: Vec<String>, style: &dyn Fn(usize, &str) -> Style| {
        let mut s = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            // Padded as plain text, so that the colour codes do not count.
            let padded = match i == last {
                true => cell.trim_end().to_string(),
                false => format!("{cell:<w$}  ", w = *w),
            };
            let (plain, pad) = padded.split_at(cell.len().min(padded.len()));
            let st = style(i, cell);
            s.push_str(&format!("{st}{plain}{st:#}{pad}"));
        }
        let _ = writeln!(out, "{}", s.trim_end());
    };
    let bold = Style::new().bold();
    line(header.iter().map(|h| h.to_string()).collect(), &|_, _| bold);
    for row in rows {
        line(row, &style);
    }
}

/// The colour of a child's status.
fn status_style(status: &str) -> Style {
    let colour = match status.split(' ').next().unwrap_or(status) {
        "running" => AnsiColor::Green,
        "starting" | "restarting" | "waiting" => AnsiColor::Yellow,
        "backoff" | "failed" => AnsiColor::Red,
        "hibernated" | "ignored" => AnsiColor::Cyan,
        _ => return Style::new(),
    };
    Style::new().fg_color(Some(colour.into()))
}

fn exit_text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}: {}", text(v)))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// How many children `ps` asks for per page (the API's maximum).
const PS_PAGE: usize = 10_000;

/// Every child, following the API's pages (`?limit=&after=`) in id order.
async fn all_children(client: &Client) -> Result<Vec<Value>> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(id) => format!("/v1/children?limit={PS_PAGE}&after={}", path_id(id)?),
            None => format!("/v1/children?limit={PS_PAGE}"),
        };
        let page = client.json(Method::GET, &path, None).await?;
        let Value::Array(page) = page else {
            return Err(anyhow::anyhow!(
                "the host answered a page that is not a list"
            ));
        };
        let full = page.len() == PS_PAGE;
        after = page
            .last()
            .and_then(|c| c["id"].as_str())
            .map(str::to_string);
        all.extend(page);
        if !full || after.is_none() {
            return Ok(all);
        }
    }
}

pub(super) async fn ps(client: &Client, json: bool) -> Result<()> {
    let children = all_children(client).await?;
    if json {
        println!("{}", Value::Array(children));
        return Ok(());
    }
    // In a cluster, where each child runs.
    let clustered = children.iter().any(|c| c.get("node").is_some());
    let rows = children
        .iter()
        .map(|c| {
            let status = match (&c["status"], &c["activated"]) {
                (Value::String(s), Value::Bool(false)) => format!("{s} (lazy)"),
                (s, _) => text(s),
            };
            let mut row = vec![
                text(&c["id"]),
                text(&c["plugin"]),
                status,
                text(&c["version"]),
                text(&c["restarts"]),
                text(&c["args"]),
                exit_text(&c["last_exit"]),
            ];
            if clustered {
                row.push(text(&c["node"]));
            }
            row
        })
        .collect();
    let mut headers = vec![
        "ID",
        "PLUGIN",
        "STATUS",
        "VERSION",
        "RESTARTS",
        "ARGS",
        "LAST EXIT",
    ];
    if clustered {
        headers.push("NODE");
    }
    table(&headers, rows, |column, cell| match column {
        2 => status_style(cell),
        _ => Style::new(),
    });
    Ok(())
}

pub(super) async fn tree(client: &Client, json: bool) -> Result<()> {
    let tree = client.json(Method::GET, "/v1/tree", None).await?;
    if json {
        println!("{tree}");
        return Ok(());
    }
    let mut out = String::new();
    out.push_str("root\n");
    let none = Vec::new();
    for group in tree["groups"].as_array().unwrap_or(&none) {
        tree_group(&mut out, group, 1);
    }
    for child in tree["children"].as_array().unwrap_or(&none) {
        tree_child(&mut out, child, 1, "");
    }
    for child in tree["dynamic"].as_array().unwrap_or(&none) {
        tree_child(&mut out, child, 1, " (dynamic)");
    }
    print!("{out}");
    Ok(())
}

fn tree_group(out: &mut String, group: &Value, depth: usize) {
    out.push_str(&format!(
        "{}group {} ({}, {}/{} restarts in {} s{})\n",
        "  ".repeat(depth),
        text(&group["id"]),
        text(&group["strategy"]),
        text(&group["restarts"]),
        text(&group["max_restarts"]),
        text(&group["max_seconds"]),
        if group["down"] == true { ", down" } else { "" }
    ));
    for member in group["members"].as_array().into_iter().flatten() {
        if let Some(child) = member.get("child") {
            tree_child(out, child, depth + 1, "");
        } else if let Some(nested) = member.get("group") {
            tree_group(out, nested, depth + 1);
        }
    }
}

fn tree_child(out: &mut String, child: &Value, depth: usize, note: &str) {
    out.push_str(&format!(
        "{}{} [{}] {}, restarts {}{note}\n",
        "  ".repeat(depth),
        text(&child["id"]),
        text(&child["plugin"]),
        text(&child["status"]),
        text(&child["restarts"]),
    ));
}

pub(super) async fn plugins(client: &Client, json: bool) -> Result<()> {
    let plugins = client.json(Method::GET, "/v1/plugins", None).await?;
    if json {
        println!("{plugins}");
        return Ok(());
    }
    let rows = plugins
        .as_array()
        .map(|list| {
            list.iter()
                .map(|p| {
                    vec![
                        text(&p["name"]),
                        text(&p["version"]),
                        text(&p["instances"]),
                        p["size"]
                            .as_u64()
                            .map_or("-".into(), |s| format!("{} KiB", s / 1024)),
                        text(&p["allocation"]),
                        text(&p["last_error"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        &[
            "NAME",
            "VERSION",
            "INSTANCES",
            "SIZE",
            "ALLOCATION",
            "LAST ERROR",
        ],
        rows,
        |column, cell| match column == 5 && cell != "-" {
            true => Style::new().fg_color(Some(AnsiColor::Red.into())),
            false => Style::new(),
        },
    );
    Ok(())
}

pub(super) async fn nodes(client: &Client, json: bool) -> Result<()> {
    let nodes = client.json(Method::GET, "/v1/nodes", None).await?;
    if json {
        println!("{nodes}");
        return Ok(());
    }
    let rows = nodes
        .as_array()
        .map(|list| {
            list.iter()
                .map(|n| {
                    let mut name = text(&n["node"]);
                    if n["this_node"] == true {
                        name.push_str(" *");
                    }
                    let plugins = n["plugins"]
                        .as_object()
                        .map(|p| {
                            p.iter()
                                .map(|(k, v)| format!("{k}@{}", text(v)))
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                        .unwrap_or_default();
                    vec![
                        name,
                        match (n["alive"] == true, n["draining"] == true) {
                            (true, false) => "alive".into(),
                            (true, true) => "draining".into(),
                            (false, _) => "gone".into(),
                        },
                        format!("{} ms", text(&n["heartbeat_age_ms"])),
                        text(&n["children"]),
                        text(&n["api"]),
                        plugins,
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        &[
            "NODE",
            "LIVENESS",
            "HEARTBEAT",
            "CHILDREN",
            "API",
            "PLUGINS",
        ],
        rows,
        |column, cell| match (column, cell) {
            (1, "alive") => Style::new().fg_color(Some(AnsiColor::Green.into())),
            (1, "draining") => Style::new().fg_color(Some(AnsiColor::Yellow.into())),
            (1, _) => Style::new().fg_color(Some(AnsiColor::Red.into())),
            _ => Style::new(),
        },
    );
    Ok(())
}

pub(super) async fn start(
    client: &Client,
    id: &str,
    plugin: &str,
    args: &str,
    restart: &str,
    lazy: bool,
    placement: &str,
) -> Result<()> {
    let args = parse_json("--args", args)?;
    let activate = if lazy { "lazy" } else { "eager" };
    let mut body =
        json!({"id": id, "plugin": plugin, "args": args, "restart": restart, "activate": activate});
    if placement != "local" {
        body["placement"] = placement.into();
    }
    let child = client
        .json(Method::POST, "/v1/children", Some(&body))
        .await?;
    if lazy {
        println!(
            "registered {} ({}, lazy: init runs at its first message)",
            text(&child["id"]),
            text(&child["plugin"]),
        );
        return Ok(());
    }
    if let Some(ignored) = child.get("ignored") {
        println!(
            "ignored {}: its init returned ignore; no child is kept",
            text(ignored)
        );
        return Ok(());
    }
    let on = match child.get("node") {
        Some(node) => format!(" on node {}", text(node)),
        None => String::new(),
    };
    println!(
        "started {} ({} {}, {}){on}",
        text(&child["id"]),
        text(&child["plugin"]),
        text(&child["version"]),
        text(&child["restart"])
    );
    Ok(())
}

pub(super) async fn drain(client: &Client, node: &str) -> Result<()> {
    let path = format!("/v1/nodes/{}/drain", path_id(node)?);
    let report = client.json(Method::POST, &path, None).await?;
    let failed = report["failed"].as_array().cloned().unwrap_or_default();
    let moved = report["moved"].as_u64().unwrap_or(0);
    println!(
        "drained {}: {moved} {} moved to other nodes, {} stayed",
        text(&report["node"]),
        if moved == 1 { "child" } else { "children" },
        failed.len()
    );
    for f in &failed {
        println!("  {}: {}", text(&f["id"]), text(&f["why"]));
    }
    match failed.is_empty() {
        true => Ok(()),
        false => anyhow::bail!("{} children could not be moved", failed.len()),
    }
}

pub(super) async fn stop(client: &Client, id: &str) -> Result<()> {
    client
        .json(
            Method::DELETE,
            &format!("/v1/children/{}", path_id(id)?),
            None,
        )
        .await?;
    println!("stopped {id}");
    Ok(())
}

/// `POST /v1/children/{id}/{action}`, then `{done} {id}`.
async fn order(client: &Client, id: &str, action: &str, done: &str) -> Result<()> {
    client
        .json(
            Method::POST,
            &format!("/v1/children/{}/{action}", path_id(id)?),
            None,
        )
        .await?;
    println!("{done} {id}");
    Ok(())
}

pub(super) async fn restart(client: &Client, id: &str) -> Result<()> {
    order(client, id, "restart", "restarted").await
}

pub(super) async fn kill(client: &Client, id: &str) -> Result<()> {
    order(client, id, "kill", "killed").await
}

pub(super) async fn hibernate(client: &Client, id: &str) -> Result<()> {
    order(client, id, "hibernate", "hibernated").await
}

pub(super) async fn call(client: &Client, id: &str, msg: &str, timeout: u64) -> Result<()> {
    let body = json!({"msg": parse_json("the message", msg)?, "timeout_ms": timeout});
    let answer = client
        .json(
            Method::POST,
            &format!("/v1/children/{}/call", path_id(id)?),
            Some(&body),
        )
        .await?;
    println!("{}", answer["reply"]);
    Ok(())
}

pub(super) async fn cast(client: &Client, id: &str, msg: &str) -> Result<()> {
    let body = json!({"msg": parse_json("the message", msg)?});
    client
        .json(
            Method::POST,
            &format!("/v1/children/{}/cast", path_id(id)?),
            Some(&body),
        )
        .await?;
    println!("cast to {id}");
    Ok(())
}

pub(super) async fn events(client: &Client, topic: Option<&str>, hibernation: bool) -> Result<()> {
    client
        .events(topic, hibernation, |_, data| {
            let mut out = std::io::stdout().lock();
            // Stop quietly when the reader goes away (`| head`).
            writeln!(out, "{data}").and_then(|()| out.flush()).is_ok()
        })
        .await
}

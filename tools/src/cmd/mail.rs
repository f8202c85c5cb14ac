//! Messages between agents: `wn send` mails a text to an agent (joined or not) or to
//! every agent of a role, `wn inbox` lists the calling agent's mail (its own mailbox and
//! its role's), waits for new mail, and acknowledges what it has handled.
//!
//! Reading does not acknowledge: a message stays unread until `--ack ID` or `--ack-all`.
//! Each is a few lines over one library call (`Segment::send`, `inbox`, `find_message`,
//! `ack`, `wait_for_mail`).

use crate::ctx::{principal, Ctx};
use crate::duration;
use crate::fail::{exit, Fail};
use crate::input::{read_bounded, Source};
use crate::output::{clean, now_ms, print, print_json};
use serde_json::{json, Value};
use std::time::Duration;
use worknode::{Handle, MailError, MessageInfo, MESSAGE_MAX};

/// Options of `wn send`.
#[derive(clap::Args, Debug)]
pub struct SendArgs {
    /// The recipient: an agent's name (it need not have joined) or `@ROLE`.
    #[arg(long, value_name = "AGENT|@ROLE")]
    to: String,
    /// The conversation this message belongs to (free text, at most 64 bytes).
    #[arg(long, value_name = "ID")]
    thread: Option<String>,
    /// The message text, or `-` to read it from stdin (at most 64 KiB).
    #[arg(value_name = "TEXT|-")]
    text: String,
}

/// Options of `wn inbox`.
#[derive(clap::Args, Debug)]
pub struct InboxArgs {
    /// If there is no unread mail, wait up to DURATION for some (exit 5 if none comes).
    #[arg(long, value_name = "DURATION", value_parser = duration::timeout)]
    wait: Option<Duration>,
    /// List acknowledged messages too.
    #[arg(long)]
    all: bool,
    /// Acknowledge the message with this id after listing (repeatable).
    #[arg(long, value_name = "ID", conflicts_with = "ack_all")]
    ack: Vec<String>,
    /// Acknowledge every unread message listed.
    #[arg(long)]
    ack_all: bool,
}

/// Runs `wn send`.
pub fn run_send(ctx: &Ctx, a: &SendArgs) -> Result<(), Fail> {
    let to = principal(&a.to)?;
    let body = if a.text == "-" {
        read_bounded(
            Source::Stdin,
            MESSAGE_MAX as u64,
            "message_too_large",
            exit::USAGE,
            "one message may hold",
            "send a shorter message, or store it as a document (`wn doc put`) and send its path",
        )?
    } else {
        a.text.clone().into_bytes()
    };
    let seg = ctx.attach_rw()?;
    let me = ctx.me(&seg)?;
    let h = seg.send(me, &to, a.thread.as_deref(), &body)?;
    let info = seg.read_message(h)?.info;
    if ctx.json {
        return print_json(&info_json(&info));
    }
    print(&format!("sent {} to {} ({} bytes)", info.id, clean(&info.to.to_string()), info.len))
}

/// Runs `wn inbox`.
pub fn run_inbox(ctx: &Ctx, a: &InboxArgs) -> Result<(), Fail> {
    let seg = ctx.attach_rw()?;
    let me = ctx.me(&seg)?;
    // Every --ack is checked before anything is printed or changed.
    let mut to_ack: Vec<Handle> = Vec::new();
    for id in &a.ack {
        let h = seg.find_message(me, id).map_err(|e| named(e, id))?;
        let m = seg.read_message(h).map_err(|e| named(e, id))?;
        if m.info.acked {
            return Err(named(MailError::AlreadyAcked, id));
        }
        // The same id twice is one ack, not an ack and an error.
        if !to_ack.contains(&h) {
            to_ack.push(h);
        }
    }
    if let Some(wait) = a.wait {
        seg.wait_for_mail(me, wait)?;
    }
    let mut mail = Vec::new();
    seg.inbox(me, a.all, &mut mail)?;
    let mut listed = Vec::with_capacity(mail.len());
    for info in &mail {
        match seg.read_message(info.handle) {
            Ok(m) => listed.push(m),
            // Acknowledged by a role peer and purged since the listing.
            Err(MailError::Pool(worknode::PoolError::StaleHandle | worknode::PoolError::NotFound)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if a.ack_all {
        to_ack.extend(listed.iter().filter(|m| !m.info.acked).map(|m| m.info.handle));
    }
    let mut acked = Vec::new();
    for h in to_ack {
        match seg.ack(me, h) {
            Ok(()) => acked.push(h),
            // --ack-all: a role peer acknowledged it meanwhile; that is what was asked.
            Err(MailError::AlreadyAcked) if a.ack_all => {}
            Err(e) => return Err(e.into()),
        }
    }
    let id_of = |h: Handle| seg.read(h).map(|n| n.name().to_string()).unwrap_or_default();
    let acked_ids: Vec<String> = acked.iter().map(|h| id_of(*h)).collect();
    if ctx.json {
        let list: Vec<Value> = listed.iter().map(message_json).collect();
        return print_json(&json!({
            "agent": seg.agent(me).map(|i| i.name).unwrap_or_default(),
            "count": list.len(),
            "messages": list,
            "acked": acked_ids,
        }));
    }
    let name = seg.agent(me).map(|i| i.name).unwrap_or_default();
    let mut text = String::new();
    if listed.is_empty() {
        text.push_str(&format!("no {}mail for {}\n", if a.all { "" } else { "unread " }, clean(&name)));
    }
    let now = now_ms();
    for m in &listed {
        let i = &m.info;
        text.push_str(&format!(
            "{}  from {}  to {}{}  {}  {} bytes{}\n",
            i.id,
            clean(&i.from),
            clean(&i.to.to_string()),
            i.thread.as_deref().map(|t| format!("  thread {}", clean(t))).unwrap_or_default(),
            duration::relative(now, i.sent.wall_ms()),
            i.len,
            if i.acked { "  acked" } else { "" }
        ));
        for line in String::from_utf8_lossy(&m.body).lines() {
            text.push_str(&format!("    {}\n", clean(line)));
        }
    }
    for id in &acked_ids {
        text.push_str(&format!("acked {id}\n"));
    }
    print(text.trim_end())
}

/// A message id given on the command line, named in the error.
fn named(e: MailError, id: &str) -> Fail {
    let mut f: Fail = e.into();
    f.message = format!("message {:?}: {}", clean(id), f.message);
    f
}

/// One message as `inbox --json` lists it: its metadata, and its text (or hex).
pub fn message_json(m: &worknode::Message) -> Value {
    let mut v = info_json(&m.info);
    match std::str::from_utf8(&m.body) {
        Ok(text) => v["text"] = json!(text),
        Err(_) => v["hex"] = json!(m.body.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    }
    v
}

/// One message's metadata as JSON.
pub fn info_json(i: &MessageInfo) -> Value {
    json!({
        "id": i.id,
        "uuid": i.uuid.to_string(),
        "to": i.to.to_string(),
        "from": i.from,
        "thread": i.thread,
        "hlc": i.sent.0,
        "time_ms": i.sent.wall_ms(),
        "bytes": i.len,
        "acked": i.acked,
    })
}

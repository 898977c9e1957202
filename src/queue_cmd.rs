//! `verdant queue …`: operators' views of the queue.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use verdant_queue::{QueueId, inspect};

/// `verdant queue list [--json]`.
pub fn list(dir: &Path, json: bool) -> anyhow::Result<()> {
    let msgs =
        inspect::list(dir).with_context(|| format!("reading the spool in {}", dir.display()))?;
    let mut out = std::io::stdout().lock();
    if json {
        for m in &msgs {
            serde_json::to_writer(&mut out, m)?;
            out.write_all(b"\n")?;
        }
        return Ok(());
    }
    if msgs.is_empty() {
        writeln!(out, "queue is empty")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<20} {:>9} {:<20} {:<10} SENDER -> RECIPIENTS",
        "ID", "SIZE", "RECEIVED", "STATE"
    )?;
    for m in &msgs {
        let sender = if m.sender.is_empty() { "<>" } else { &m.sender };
        writeln!(
            out,
            "{:<20} {:>9} {:<20} {:<10} {sender} -> {}",
            m.id,
            m.size,
            m.received_at,
            m.state,
            m.recipients.join(", ")
        )?;
        if let (Some(next), Some(error)) = (&m.next_attempt, &m.last_error) {
            writeln!(
                out,
                "{:>20} attempt {}, next {next}: {error}",
                "", m.attempts
            )?;
        }
    }
    writeln!(out, "{} message(s)", msgs.len())?;
    Ok(())
}

/// `verdant queue show ID`.
pub fn show(dir: &Path, id: &str) -> anyhow::Result<()> {
    let id: QueueId = id.parse()?;
    let Some((info, body)) = inspect::show(dir, id)
        .with_context(|| format!("reading the spool in {}", dir.display()))?
    else {
        bail!("no message {id} in {}", dir.display());
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "id: {}", info.id)?;
    writeln!(out, "state: {}", info.state)?;
    if let (Some(next), Some(error)) = (&info.next_attempt, &info.last_error) {
        writeln!(out, "attempts: {}", info.attempts)?;
        writeln!(out, "next_attempt: {next}")?;
        writeln!(out, "last_error: {error}")?;
    }
    writeln!(out, "received_at: {}", info.received_at)?;
    writeln!(out, "sender: <{}>", info.sender)?;
    for r in &info.recipients {
        writeln!(out, "recipient: <{r}>")?;
    }
    writeln!(out, "size: {}", info.size)?;
    if let Some(mid) = &info.message_id {
        writeln!(out, "message_id: {mid}")?;
    }
    writeln!(out)?;
    out.write_all(&body)?;
    Ok(())
}

/// `verdant queue retry|remove`: asks the running server.
pub fn control(dir: &Path, cmd: verdant_engine::engine::Control) -> anyhow::Result<()> {
    if let verdant_engine::engine::Control::Retry { id: Some(id) }
    | verdant_engine::engine::Control::Remove { id, .. } = &cmd
    {
        id.parse::<QueueId>()?;
    }
    let r = crate::control::send(dir, &cmd)?;
    println!("{} message(s) affected", r.affected);
    if r.busy > 0 {
        println!(
            "{} message(s) are being delivered right now; try again when the attempt is over",
            r.busy
        );
    }
    if r.affected == 0 && r.busy == 0 {
        bail!("no deferred message matched");
    }
    Ok(())
}

//! iceoryx2 publish-subscribe (the crate from crates.io), set up as its own benchmark
//! does: two services (`a2b`, `b2a`), history 0, subscriber buffer 1, safe overflow,
//! and a receiver that busy-polls `Subscriber::receive`. The 64-byte payload is written
//! into the loaned sample and checksummed by the receiver.
//!
//! If iceoryx2 cannot start here (its node or services fail to create), the measurement
//! is reported as skipped with iceoryx2's error.

use crate::payload::{self, Payload, PING, PONG};
use crate::pingpong::{drive, finish};
use crate::proc::{spin_until, RoleCtx};
use crate::suite::{Ctx, Fail, Measured};
use iceoryx2::prelude::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

type Node = iceoryx2::node::Node<ipc::Service>;
type Port = iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, Payload, ()>;

fn node() -> Result<Node, String> {
    set_log_level(LogLevel::Error);
    NodeBuilder::new()
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<ipc::Service>()
        .map_err(|e| format!("iceoryx2 node: {e:?}"))
}

fn service(node: &Node, name: &str, create: bool) -> Result<Port, String> {
    let sn = ServiceName::new(name).map_err(|e| format!("iceoryx2 service name {name}: {e:?}"))?;
    let b = node
        .service_builder(&sn)
        .publish_subscribe::<Payload>()
        .max_publishers(1)
        .max_subscribers(1)
        .history_size(0)
        .subscriber_max_buffer_size(1)
        .enable_safe_overflow(true);
    if create {
        b.create().map_err(|e| format!("iceoryx2 create service {name}: {e:?}"))
    } else {
        b.open().map_err(|e| format!("iceoryx2 open service {name}: {e:?}"))
    }
}

fn publish(p: &iceoryx2::port::publisher::Publisher<ipc::Service, Payload, ()>, v: Payload) -> Result<(), String> {
    let s = p.loan_uninit().map_err(|e| format!("iceoryx2 loan: {e:?}"))?;
    let reached = s.write_payload(v).send().map_err(|e| format!("iceoryx2 send: {e:?}"))?;
    if reached == 0 {
        return Err("iceoryx2 send reached no subscriber".into());
    }
    Ok(())
}

/// Parent side (process `a`).
pub fn run(ctx: &Ctx) -> Result<Measured, Fail> {
    let a2b_name = format!("wn-bench-{}-a2b", std::process::id());
    let b2a_name = format!("wn-bench-{}-b2a", std::process::id());
    let setup = || -> Result<_, String> {
        let node = node()?;
        let a2b = service(&node, &a2b_name, true)?;
        let b2a = service(&node, &b2a_name, true)?;
        let publisher = a2b.publisher_builder().create().map_err(|e| format!("iceoryx2 publisher: {e:?}"))?;
        let subscriber = b2a.subscriber_builder().create().map_err(|e| format!("iceoryx2 subscriber: {e:?}"))?;
        Ok((node, a2b, b2a, publisher, subscriber))
    };
    let (_node, _a2b, _b2a, publisher, subscriber) =
        setup().map_err(|e| Fail::Skip(format!("iceoryx2 cannot start here: {e}")))?;
    let child = ctx.spawn(
        "iceoryx2-pong",
        &[("a2b", a2b_name.clone()), ("b2a", b2a_name.clone()), ("rounds", ctx.plan.total().to_string())],
    )?;
    let driven = drive(&ctx.plan, |i| {
        publish(&publisher, payload::make(i, PING))?;
        let mut got = None;
        let mut err = None;
        spin_until(
            || match subscriber.receive() {
                Ok(Some(s)) => {
                    got = Some(*s);
                    true
                }
                Ok(None) => false,
                Err(e) => {
                    err = Some(format!("iceoryx2 receive: {e:?}"));
                    true
                }
            },
            WAIT,
        )?;
        if let Some(e) = err {
            return Err(e);
        }
        payload::check(&got.expect("received"), i, PONG)
    })?;
    finish(ctx, child, driven, vec!["iceoryx2 0.10 ipc::Service, [u8; 64] payload, busy-poll receive".into()])
}

/// Child side (process `b`).
pub fn role(ctx: &RoleCtx) -> Result<(), String> {
    let rounds: u64 = ctx.parse("rounds")?;
    let node = node()?;
    let a2b = service(&node, ctx.get("a2b")?, false)?;
    let b2a = service(&node, ctx.get("b2a")?, false)?;
    let subscriber = a2b.subscriber_builder().create().map_err(|e| format!("iceoryx2 subscriber: {e:?}"))?;
    let publisher = b2a.publisher_builder().create().map_err(|e| format!("iceoryx2 publisher: {e:?}"))?;
    ctx.ready();
    for i in 0..rounds {
        let mut got = None;
        spin_until(
            || match subscriber.receive() {
                Ok(Some(s)) => {
                    got = Some(Ok(*s));
                    true
                }
                Ok(None) => false,
                Err(e) => {
                    got = Some(Err(format!("iceoryx2 receive: {e:?}")));
                    true
                }
            },
            Duration::from_secs(60),
        )?;
        let p = got.expect("received")?;
        payload::check(&p, i, PING)?;
        publish(&publisher, payload::make(i, PONG))?;
    }
    ctx.result(&serde_json::json!({ "rounds": rounds }));
    Ok(())
}
